"""The noise process of a diffusion model: how training noises clean tensors and what the network must
predict, and the sampling loops that walk noise back to data. MONAI's schedulers do the arithmetic; this
module holds no weights (a network is not its sampler).

Training schedulers:
- ``ddpm``: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e with a_t the cumulative product of a named beta
  schedule; the network predicts e (``epsilon``) or v = sqrt(a_t) e - sqrt(1 - a_t) x_0 (``v_prediction``).
- ``rflow``: rectified flow, x_t = (1 - t/T) x_0 + (t/T) e; the network predicts the velocity x_0 - e.

Samplers: ``ddim`` (deterministic, eta = 0) and ``ddpm`` (ancestral, eta = 1) for a ``ddpm``-trained
network; ``rflow`` (Euler steps along the velocity) for an ``rflow``-trained one. ``ddpm`` runs through
MONAI's DDIM update with eta = 1, which is DDPM's posterior step at any stride: MONAI's
``DDPMScheduler.step`` assumes consecutive timesteps (t -> t - 1) and is wrong for fewer sampling steps
than training steps. Timesteps are evenly spaced and start at T - 1 ("trailing" spacing), so that the
first step starts from pure noise and each step lands where the next one starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from monai.networks.schedulers import DDIMScheduler, RFlowScheduler
from pydantic import BaseModel, ConfigDict, Field, model_validator

TrainingScheduler = Literal["ddpm", "rflow"]
Sampler = Literal["ddpm", "ddim", "rflow"]
SAMPLERS: dict[str, tuple[str, ...]] = {"ddpm": ("ddim", "ddpm"), "rflow": ("rflow",)}  # first: the default


class NoiseConfig(BaseModel):
    """The noise process's parameters (part of a diffusion model's ``params``)."""

    model_config = ConfigDict(extra="forbid")

    scheduler: TrainingScheduler = "ddpm"  # training: DDPM noise schedule, or rectified flow
    prediction: Literal["epsilon", "v_prediction"] | None = None  # ddpm only (default epsilon); rflow: velocity
    schedule: Literal["linear_beta", "scaled_linear_beta", "cosine"] = "scaled_linear_beta"  # ddpm's betas
    beta_start: float = Field(0.0005, gt=0, lt=1)  # linear schedules (MONAI tutorials: 0.0005 .. 0.0195)
    beta_end: float = Field(0.0195, gt=0, lt=1)
    num_train_timesteps: int = Field(1000, ge=2)
    timestep_sampling: Literal["uniform", "logit-normal"] = "uniform"  # rflow's training timesteps (MAISI: logit-normal)
    sampler: Sampler | None = None  # default sampling loop: ddim after ddpm training, rflow after rflow
    sample_steps: int = Field(50, ge=1)  # default number of sampling steps

    @model_validator(mode="after")
    def _consistent(self) -> "NoiseConfig":
        if self.scheduler == "rflow" and self.prediction not in (None, "v_prediction"):
            raise ValueError("prediction: rflow always predicts the velocity x_0 - noise; leave prediction unset")
        if self.sampler is not None and self.sampler not in SAMPLERS[self.scheduler]:
            raise ValueError(f"sampler {self.sampler!r} cannot sample a {self.scheduler}-trained network; "
                             f"use one of {list(SAMPLERS[self.scheduler])}")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"sample_steps {self.sample_steps} exceeds num_train_timesteps {self.num_train_timesteps}")
        return self


Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, timesteps [B]) -> network output


class NoiseProcess:
    """Training targets and sampling loops of one `NoiseConfig`."""

    def __init__(self, config: NoiseConfig, spatial_dims: int, clip: bool = True) -> None:
        """``clip``: keep predicted and final samples in [-1, 1] (data space); off for latents, which are unbounded."""
        self.config, self.clip = config, clip
        self.num_train_timesteps = config.num_train_timesteps
        if config.scheduler == "rflow":
            self.scheduler = RFlowScheduler(config.num_train_timesteps, use_discrete_timesteps=True,
                                            sample_method=config.timestep_sampling, spatial_dim=spatial_dims)
        else:
            betas = {} if config.schedule == "cosine" else {"beta_start": config.beta_start, "beta_end": config.beta_end}
            self.scheduler = DDIMScheduler(config.num_train_timesteps, schedule=config.schedule, clip_sample=clip,
                                           prediction_type=config.prediction or "epsilon", **betas)

    @property
    def samplers(self) -> tuple[str, ...]:
        return SAMPLERS[self.config.scheduler]

    def training_example(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy x_t, timesteps [B], the network's target) for a clean batch, from the global RNG."""
        noise = torch.randn_like(clean)
        if self.config.scheduler == "rflow":
            timesteps = self.scheduler.sample_timesteps(clean)
            return self.scheduler.add_noise(clean, noise, timesteps), timesteps, clean - noise
        timesteps = torch.randint(0, self.num_train_timesteps, (clean.shape[0],), device=clean.device)
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        target = noise if self.scheduler.prediction_type == "epsilon" else self.scheduler.get_velocity(clean, noise, timesteps)
        return noisy, timesteps, target

    def sample(self, predict: Predict, noise: torch.Tensor, sampler: str | None = None, steps: int | None = None,
               generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """Walk x_T = ``noise`` back to x_0 (clamped to [-1, 1] if ``clip``) in ``steps`` calls of ``predict``.

        Args:
            sampler: ``ddpm``, ``ddim`` or ``rflow`` (one of `samplers`); None: the configured default.
            steps: sampling steps, 1..num_train_timesteps; None: the configured ``sample_steps``.
            generators: ``ddpm`` only: one per sample, on ``noise``'s device, for the noise each step adds, so
                that a sample does not depend on the others in its batch.

        Raises:
            ValueError: a sampler the training scheduler does not allow, or a step count out of range.
        """
        sampler = sampler or self.config.sampler or self.samplers[0]
        steps = steps or self.config.sample_steps
        if sampler not in self.samplers:
            raise ValueError(f"sampler {sampler!r} cannot sample a {self.config.scheduler}-trained network")
        if not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(f"steps must lie in 1..{self.num_train_timesteps}, got {steps}")
        if sampler == "rflow":
            x = self._rflow(predict, noise, steps)
        else:
            if sampler == "ddpm" and (generators is None or len(generators) != noise.shape[0]):
                raise ValueError("the ddpm sampler needs one generator per sample")
            x = self._ddim(predict, noise, steps, generators if sampler == "ddpm" else None)
        return x.clamp(-1.0, 1.0) if self.clip else x

    def sampling_timesteps(self, steps: int) -> list[int]:
        """DDIM's timesteps: a stride of T // steps, ending one stride above 0 ("trailing" spacing from T - 1)."""
        stride = self.num_train_timesteps // steps
        offset = self.num_train_timesteps - 1 - (steps - 1) * stride
        return [offset + k * stride for k in reversed(range(steps))]

    def _ddim(self, predict: Predict, x: torch.Tensor, steps: int, generators: list[torch.Generator] | None) -> torch.Tensor:
        scheduler = self.scheduler
        scheduler.set_timesteps(steps)  # sets the stride step() uses to find the previous timestep
        for t in self.sampling_timesteps(steps):
            output = predict(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)).float()
            if generators is None:
                x, _ = scheduler.step(output, t, x)
            else:  # per sample: each sample's step noise comes from its own generator
                x = torch.cat([scheduler.step(output[i : i + 1], t, x[i : i + 1], eta=1.0, generator=g)[0]
                               for i, g in enumerate(generators)])
        return x

    def _rflow(self, predict: Predict, x: torch.Tensor, steps: int) -> torch.Tensor:
        scheduler = self.scheduler
        scheduler.set_timesteps(steps, device=x.device)
        timesteps = scheduler.timesteps.tolist()
        for t, next_t in zip(timesteps, [*timesteps[1:], 0]):
            output = predict(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)).float()
            x, _ = scheduler.step(output, t, x, next_t)
        return x
