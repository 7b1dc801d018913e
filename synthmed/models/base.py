"""What every generative model offers the trainer and the sampler.

A model owns its networks (``nets``, one optimiser each), declares its training phases, and computes
the gradients of one phase at a time (the StyleGAN2-ADA split of loop and loss), so that one loop
drives DCGAN, WGAN, HA-GAN and StyleGAN2 alike. What a model can do beyond drawing pairs (classes,
given masks, truncation, an encoder) it declares once, in its ``capabilities``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch
from torch import nn

from synthmed.errors import UserError
from synthmed.models.pairing import PairCodec

Outputs = Literal["pairs", "masks", "images_for_masks"]


@dataclass(frozen=True)
class Phase:
    name: str  # passed to accumulate_gradients, e.g. "D" or "G"
    optimizer: str  # key of the network (and optimiser) this phase updates
    interval: int = 1  # run at every `interval`-th step
    start_step: int = 0  # first step it runs at (a latent diffusion U-Net waits for its autoencoder)
    stop_step: int | None = None  # first step it no longer runs at; None: never stops

    def due(self, step: int) -> bool:
        """Whether the phase runs at training step ``step``."""
        in_window = self.start_step <= step and (self.stop_step is None or step < self.stop_step)
        return in_window and step % self.interval == 0


@dataclass(frozen=True)
class Capabilities:
    """What a model can do. Each family declares it once; the trainer, the sampler, the grid and
    ``synthmed encode`` read only this.

    Attributes:
        outputs: what ``sample`` draws: ``"pairs"`` (images and masks), ``"masks"`` (masks only; the
            images have zero channels: M-SG) or ``"images_for_masks"`` (images for the masks given as
            ``sample(masks=...)``: C-SG).
        num_classes: > 0 for a class-conditional model: training needs ``data.class_key`` giving this
            many classes, and ``sample(classes=...)`` picks each sample's class.
        truncation: ``sample(truncation=psi)`` is meaningful (StyleGAN2's W-space truncation).
        encoder: ``reconstruct(real)`` maps real network tensors to codes and back (HA-GAN's encoders).
        samplers: the sampling loops ``sample(sampler=..., steps=...)`` may pick (a diffusion model's
            ``ddpm``, ``ddim`` or ``rflow``); empty for one-pass generators.
        guidance: classifier-free guidance: the model's ``guidance_scale`` may be set before sampling
            (a class-conditional diffusion model).
    """

    outputs: Outputs = "pairs"
    num_classes: int = 0
    truncation: bool = False
    encoder: bool = False
    samplers: tuple[str, ...] = ()
    guidance: bool = False

    def __post_init__(self) -> None:
        if self.outputs not in get_args(Outputs) or self.num_classes < 0:
            raise ValueError(f"invalid capabilities {self}")

    @property
    def class_conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def mask_conditional(self) -> bool:
        """Renders images for given masks (and needs them)."""
        return self.outputs == "images_for_masks"


class GenerativeModel(nn.Module):
    """Base class of the generative families.

    A family sets ``nets`` (ModuleDict: the trainable networks, one optimiser each), ``codec``,
    ``latent_dim`` and ``capabilities``, implements ``phases`` and ``accumulate_gradients``, and calls
    ``init_ema`` at the end of its ``__init__``. Sampling runs ``latent`` -> ``sampling_inputs`` ->
    ``render`` per batch (see `sample`); the defaults fit a generator that maps z to a network tensor.

    ``ema_net`` is the exponential moving average of ``nets[ema_target]``; `sample` renders with it.
    Nothing in the EMA or the phase loop assumes a GAN. A diffusion family (MONAI's DiffusionModelUNet,
    a noise schedule and a sampling loop: three objects) would plug in as:

    - ``nets = {"unet": DiffusionModelUNet(...)}``, ``ema_target = "unet"``, one phase
      ``Phase("denoise", "unet")``; ``accumulate_gradients`` draws timesteps and noise, noises ``real``
      with the schedule and backpropagates the noise-prediction loss.
    - the noise schedule is a plain attribute (no weights: not in ``nets``, no optimiser, no EMA).
    - ``latent`` returns the starting noise x_T [N, C, *S] (the network tensor's shape) instead of
      [N, latent_dim]; ``sampling_inputs`` draws one seed per sample for the noise a stochastic sampler
      adds at every step (as FastGAN's noise seeds), so samples do not depend on ``batch_size``.
    - ``render(net, z, part, inputs)`` is the sampling loop: from ``z`` = x_T it steps through the
      schedule calling ``net`` (the EMA U-Net) at every step, then returns ``codec.decode(x_0)``.
    """

    nets: nn.ModuleDict
    codec: PairCodec
    latent_dim: int
    capabilities: Capabilities = Capabilities()  # a plain pair generator; families declare theirs
    ema_target = "G"  # the network whose exponential moving average (``ema_net``) is used for sampling
    _wrapped_nets: dict[str, nn.Module] | None = None

    def init_ema(self) -> None:
        self.ema_net = copy.deepcopy(self.nets[self.ema_target]).eval().requires_grad_(False)

    @property
    def training_nets(self) -> Mapping[str, nn.Module]:
        """The networks as training forward passes call them: ``nets``, or their wrappers after `wrap`."""
        return self.nets if self._wrapped_nets is None else self._wrapped_nets

    def wrap(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the trainable networks (e.g. in DistributedDataParallel) for their training forward passes.

        The wrappers are kept outside the module tree: state dicts keep the keys of ``nets``.
        """
        self._wrapped_nets = {name: wrapper(net) for name, net in self.nets.items()}

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Compute the phase's loss on a real batch (network tensor), backpropagate, return detached losses.

        ``classes`` (class-conditional models only): each case's class index, -1 where unknown.
        """
        raise NotImplementedError

    def after_optimizer_step(self, phase: str) -> None:
        """Hook after a phase's optimiser step (weight clipping, for instance)."""

    def sampling_networks(self) -> dict[str, nn.Module]:
        """Networks besides ``ema_net`` that `render` uses (exported with the generator); none for a GAN."""
        return {}

    def extra_state(self) -> dict:
        """Training state outside the networks that a checkpoint must keep (ADA's probability, ...)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` returned."""

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        source = self.nets[self.ema_target]
        for p_ema, p in zip(self.ema_net.parameters(), source.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.ema_net.buffers(), source.buffers()):
            b_ema.copy_(b)

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The starting point of ``n`` samples (here z [n, latent_dim]), drawn from ``generator``."""
        return torch.randn(n, self.latent_dim, generator=generator)

    def check_sampling_options(self, truncation: float = 1.0, masks: torch.Tensor | None = None,
                               classes: torch.Tensor | list[int] | None = None, sampler: str | None = None,
                               steps: int | None = None) -> None:
        """Refuse options this model cannot honour, instead of silently ignoring them.

        Raises:
            UserError: an option the model's ``capabilities`` do not include.
        """
        name, can = type(self).__name__, self.capabilities
        if truncation != 1.0 and not can.truncation:
            raise UserError(f"--trunc: {name} has no truncation trick; leave it at 1.0")
        if masks is not None and not can.mask_conditional:
            raise UserError(f"--masks: {name} does not render images for given masks (a mask-conditional model does)")
        if classes is not None and not can.class_conditional:
            raise UserError(f"--class: this {name} is not class-conditional (it was trained without classes)")
        if (sampler is not None or steps is not None) and not can.samplers:
            raise UserError(f"--sampler/--steps: {name} draws in one pass; only diffusion models take them")
        if sampler is not None and sampler not in can.samplers:
            raise UserError(f"--sampler {sampler}: this {name} offers {', '.join(can.samplers)}")
        if steps is not None and steps < 1:
            raise UserError(f"--steps must be at least 1, got {steps}")

    def set_guidance(self, guidance: float | None) -> None:
        """``--guidance W``: the classifier-free guidance scale of the next samplings (None: leave it).

        Raises:
            UserError: a model without classifier-free guidance (not class-conditional), or a negative scale.
        """
        if guidance is None:
            return
        if not self.capabilities.guidance:
            raise UserError(f"--guidance: this {type(self).__name__} has no classifier-free guidance (a diffusion "
                            "model trained with model.params.num_classes > 0 and data.class_key has)")
        if guidance < 0:
            raise UserError(f"--guidance must be at least 0, got {guidance}")
        self.guidance_scale = guidance

    @torch.no_grad()
    def sample(
        self, n: int, seed: int, use_ema: bool = True, batch_size: int = 8, truncation: float = 1.0,
        masks: torch.Tensor | None = None, classes: torch.Tensor | list[int] | None = None,
        sampler: str | None = None, steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` pairs: images float32 [N,C,*S] in [-1,1] and masks int64 [N,*S], on the CPU.

        Latents (then whatever `sampling_inputs` draws) come from ``seed`` up front, so the result does not
        depend on ``batch_size``. ``truncation`` (psi, 1 = none), ``masks`` (int64 [N,*S]) and ``classes``
        (one index per sample), ``sampler`` and ``steps`` (the sampling loop; None: the model's default) are
        for the models whose ``capabilities`` include them.
        """
        self.check_sampling_options(truncation, masks, classes, sampler, steps)
        rng = torch.Generator().manual_seed(seed)
        z_all = self.latent(n, rng)
        inputs = self.sampling_inputs(n, rng, truncation=truncation, masks=masks, classes=classes, sampler=sampler,
                                      steps=steps)
        return self._render_batches(z_all, inputs, use_ema, batch_size)

    @torch.no_grad()
    def sample_seeds(
        self, seeds: list[int], use_ema: bool = True, batch_size: int = 8, truncation: float = 1.0,
        masks: torch.Tensor | None = None, classes: torch.Tensor | list[int] | None = None,
        sampler: str | None = None, steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair per seed (StyleGAN2-ADA's ``--seeds``): pair k is ``sample(1, seed=seeds[k])`` with mask /
        class k, so it does not depend on the other seeds, their order or ``batch_size``; drawn in batches.

        ``masks`` and ``classes`` (when given) hold one entry per seed, in the order of ``seeds``.
        """
        self.check_sampling_options(truncation, masks, classes, sampler, steps)
        if classes is not None:
            classes = torch.as_tensor(classes, dtype=torch.long).expand(len(seeds))
        latents, parts = [], []
        for k, seed in enumerate(seeds):
            rng = torch.Generator().manual_seed(int(seed))
            latents.append(self.latent(1, rng))
            parts.append(self.sampling_inputs(
                1, rng, truncation=truncation, masks=None if masks is None else masks[k : k + 1],
                classes=None if classes is None else classes[k : k + 1], sampler=sampler, steps=steps))
        return self._render_batches(torch.cat(latents), _concatenate_inputs(parts), use_ema, batch_size)

    def _render_batches(self, z_all: torch.Tensor, inputs: dict, use_ema: bool,
                        batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`render` over ``z_all`` in batches of ``batch_size``, with the EMA (or the trained) network in eval mode."""
        net = self.ema_net if use_ema else self.nets[self.ema_target]
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        n = len(z_all)
        images, labels = [], []
        try:
            for start in range(0, n, batch_size):
                part = slice(start, start + batch_size)
                image, mask = self.render(net, z_all[part].to(device), part, inputs)
                images.append(image.cpu())
                labels.append(mask.cpu())
        finally:
            net.train(was_training)
        return torch.cat(images), torch.cat(labels)

    def check_given_masks(self, n: int, masks: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
        """Validate the masks a mask-conditional model renders images for: int [n, *shape], known labels.

        Raises:
            UserError: masks missing, of the wrong shape or count, or with unknown labels.
        """
        name = type(self).__name__
        if masks is None:
            raise UserError(f"{name} renders images for given masks: pass --masks DIR (a folder of masks or a "
                            "synthetic set) or --mask-checkpoint RUN (a mask-only generator)")
        if tuple(masks.shape) != (n, *shape):
            raise UserError(f"--masks: {name} needs {n} masks of shape {list(shape)} (the training shape), "
                            f"got an array of shape {list(masks.shape)}")
        if masks.is_floating_point() and not torch.equal(masks, masks.round()):
            raise UserError("--masks: masks must hold integer labels")
        masks = masks.long()
        top = self.codec.num_labels - 1
        if not self.codec.config.binarize and (masks.min() < 0 or masks.max() > top):
            raise UserError(f"--masks: labels must lie in 0..{top} (the model's labels); "
                            f"found {int(masks.min())}..{int(masks.max())}")
        return masks

    def sampling_inputs(self, n: int, rng: torch.Generator, **options) -> dict:
        """What the samples need besides z, checked or drawn (from ``rng``, after z) once for all ``n``."""
        return {}

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, masks) of one batch drawn from ``z`` with ``net`` (the EMA network, or the trained one);
        ``part`` is the batch's share of ``inputs``. May run any number of network passes."""
        return self.codec.decode(net(z))

    def reconstruct(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code, reconstruction) of real network tensors; for models whose ``capabilities.encoder`` is set."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")


def _concatenate_inputs(parts: list[dict]) -> dict:
    """The `GenerativeModel.sampling_inputs` of single samples joined into those of a batch: tensors and
    lists (one entry per sample) concatenated; anything else (truncation, sampler, None) is shared, taken
    from the first."""
    joined = {}
    for key, first in parts[0].items():
        values = [part[key] for part in parts]
        if isinstance(first, torch.Tensor):
            joined[key] = torch.cat(values)
        elif isinstance(first, list):
            joined[key] = [v for value in values for v in value]
        else:
            joined[key] = first
    return joined
