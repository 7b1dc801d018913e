"""What every generative model offers the trainer and the sampler.

A model owns its networks (``nets``, one optimiser each), declares its training phases, and computes
the gradients of one phase at a time (the StyleGAN2-ADA split of loop and loss), so that one loop
drives DCGAN, WGAN, HA-GAN and StyleGAN2 alike.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from synthmed.errors import UserError
from synthmed.models.pairing import PairCodec


@dataclass(frozen=True)
class Phase:
    name: str  # passed to accumulate_gradients, e.g. "D" or "G"
    optimizer: str  # key of the network (and optimiser) this phase updates
    interval: int = 1  # run at every `interval`-th step


class GenerativeModel(nn.Module):
    """Base class. Subclasses set ``nets`` (ModuleDict), ``codec`` and ``latent_dim``."""

    nets: nn.ModuleDict
    codec: PairCodec
    latent_dim: int
    ema_target = "G"  # the network whose exponential moving average is used for sampling
    supports_truncation = False  # sample(truncation=psi) is meaningful (StyleGAN2's W-space truncation)
    mask_conditional = False  # renders images for given masks: sample(masks=...) (C-SG)
    num_classes = 0  # > 0: class-conditional, sample(classes=...) picks each sample's class

    def init_ema(self) -> None:
        self.G_ema = copy.deepcopy(self.nets[self.ema_target]).eval().requires_grad_(False)
        self.run = dict(self.nets.items())  # modules used in forward passes (DDP wrappers if distributed)

    def wrap(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the trainable networks (e.g. in DistributedDataParallel) for their forward passes."""
        self.run = {name: wrapper(net) for name, net in self.nets.items()}

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def accumulate_gradients(self, phase: str, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the phase's loss on a real batch (network tensor), backpropagate, return detached losses."""
        raise NotImplementedError

    def after_optimizer_step(self, phase: str) -> None:
        """Hook after a phase's optimiser step (weight clipping, for instance)."""

    def extra_state(self) -> dict:
        """Training state outside the networks that a checkpoint must keep (ADA's probability, ...)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` returned."""

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        source = self.nets[self.ema_target]
        for p_ema, p in zip(self.G_ema.parameters(), source.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), source.buffers()):
            b_ema.copy_(b)

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def check_sampling_options(self, truncation: float = 1.0, masks: torch.Tensor | None = None,
                               classes: torch.Tensor | list[int] | None = None) -> None:
        """Refuse options this model cannot honour, instead of silently ignoring them."""
        name = type(self).__name__
        if truncation != 1.0 and not self.supports_truncation:
            raise UserError(f"--trunc: {name} has no truncation trick; leave it at 1.0")
        if masks is not None and not self.mask_conditional:
            raise UserError(f"--masks: {name} does not render images for given masks (a mask-conditional model does)")
        if classes is not None and not self.num_classes:
            raise UserError(f"--class: this {name} is not class-conditional (it was trained without classes)")

    @torch.no_grad()
    def sample(
        self, n: int, seed: int, use_ema: bool = True, batch_size: int = 8, truncation: float = 1.0,
        masks: torch.Tensor | None = None, classes: torch.Tensor | list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` pairs: images float32 [N,C,*S] in [-1,1] and masks int64 [N,*S], on the CPU.

        Latents (then whatever `sampling_inputs` draws) come from ``seed`` up front, so the result does not
        depend on ``batch_size``. ``truncation`` (psi, 1 = none), ``masks`` (int64 [N,*S]) and ``classes``
        (one index per sample) are for the models that support them; see `check_sampling_options`.
        """
        self.check_sampling_options(truncation, masks, classes)
        net = self.G_ema if use_ema else self.nets[self.ema_target]
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        rng = torch.Generator().manual_seed(seed)
        z_all = self.latent(n, rng)
        inputs = self.sampling_inputs(n, rng, truncation=truncation, masks=masks, classes=classes)
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

    def sampling_inputs(self, n: int, rng: torch.Generator, **options) -> dict:
        """What the samples need besides z, checked or drawn (from ``rng``, after z) once for all ``n``."""
        return {}

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, masks) of one batch of latents; ``part`` is the batch's share of ``inputs``."""
        return self.codec.decode(net(z))
