"""StyleGAN2-ADA with the mask variants of Vu et al. ("Using Synthetic Images to Augment Small Medical
Image Datasets"), registered as ``stylegan2`` with ``params.variant``:

- ``B-SG``: image and mask are channels of one generator output (see ``pairing``);
- ``M-SG``: masks only; ``sample`` returns images with zero channels;
- ``C-SG``: images for given masks. The one-hot mask is concatenated to every resolution of the
  generator and the discriminator; D judges (image, mask) pairs: real pairs against (generated image,
  the same real mask). MC-SG is the chain M-SG masks -> C-SG ``sample(masks=...)``.

Training follows StyleGAN2-ADA: non-saturating logistic loss, lazy R1 (phase ``Dreg`` every
``r1_interval`` steps) and path-length regularisation (``Greg`` every ``pl_interval`` steps), each scaled
by its interval; style mixing; adaptive discriminator augmentation of every input D sees.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from pydantic import BaseModel, ConfigDict, Field, model_validator

from synthmed.errors import UserError
from synthmed.models.augment import AdaptiveAugment, AugmentConfig
from synthmed.models.base import Capabilities, GenerativeModel, Outputs, Phase
from synthmed.models.pairing import MaskOnlyCodec, PairCodec, PairingConfig
from synthmed.models.registry import DataInfo, register_model
from synthmed.models.stylegan2.networks import Discriminator, Generator
from synthmed.models import losses

Variant = Literal["B-SG", "M-SG", "C-SG"]
OUTPUTS: dict[str, Outputs] = {"B-SG": "pairs", "M-SG": "masks", "C-SG": "images_for_masks"}
MIN_RESOLUTION, MAX_RESOLUTION = 32, 512


class StyleGAN2Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: Variant = "B-SG"  # B-SG image+mask, M-SG mask only, C-SG image given a mask
    z_dim: int = Field(512, ge=1)  # latent z
    w_dim: int = Field(512, ge=1)  # intermediate latent w
    mapping_layers: int = Field(2, ge=1)  # StyleGAN2-ADA's "auto" config uses 2 (the paper 8)
    mapping_lr_multiplier: float = Field(0.01, gt=0)
    channel_base: int = Field(16384, ge=1)  # feature maps at resolution r: min(channel_base / r, channel_max)
    channel_max: int = Field(512, ge=1)
    pairing: PairingConfig = PairingConfig()
    r1_gamma: float | None = Field(None, ge=0)  # R1 weight; None: ADA's heuristic 0.0002 H W / (its batch)
    r1_interval: int = Field(16, ge=1)  # lazy R1: every r1_interval steps, scaled by it
    pl_weight: float = Field(2.0, ge=0)  # path-length regularisation weight; 0 = off
    pl_interval: int = Field(4, ge=1)  # lazy path length: every pl_interval steps, scaled by it
    pl_batch_shrink: int = Field(2, ge=1)  # path length on batch / pl_batch_shrink samples
    pl_decay: float = Field(0.01, gt=0, le=1)  # moving-average decay of the target path length
    style_mixing_prob: float = Field(0.9, ge=0, le=1)
    mbstd_group_size: int = Field(4, ge=1)  # minibatch-stddev group (reduced to a divisor of the batch)
    mbstd_channels: int = Field(1, ge=1)
    w_avg_beta: float = Field(0.995, ge=0, lt=1)  # decay of the tracked mean w (truncation centre)
    augment: AugmentConfig = AugmentConfig()  # ADA (mode ada | fixed | none)

    @model_validator(mode="after")
    def _channel_layout(self) -> "StyleGAN2Params":
        if self.pairing.layout != "channel":
            raise ValueError("pairing.layout must be 'channel' for stylegan2 (zconcat is for 3D volumes)")
        return self


def auto_r1_gamma(resolution: int) -> float:
    """StyleGAN2-ADA's "auto" R1 weight, 0.0002 res^2 / batch, with its batch min(4096 / res, 32)."""
    batch = max(1, min(4096 // resolution, 32))
    return 0.0002 * resolution**2 / batch


def check_data_shape(shape: tuple[int, ...]) -> int:
    """The square 2D resolution StyleGAN2 generates.

    Raises:
        UserError: 3D data, a non-square shape, or a side that is not a power of two in 32..512.
    """
    if len(shape) != 2:
        raise UserError(f"model stylegan2 is 2D only; the data has shape {list(shape)} ({len(shape)}D). "
                        f"Use a 3D model (dcgan3d, wgan3d, hagan) for volumes")
    height, width = shape
    if height != width or height < MIN_RESOLUTION or height > MAX_RESOLUTION or height & (height - 1):
        raise UserError(f"model stylegan2: data shape {list(shape)} is not supported; images must be square with "
                        f"a power-of-two side from {MIN_RESOLUTION} to {MAX_RESOLUTION} (e.g. 64x64, 256x256). "
                        f"Prepare the data with such a --shape")
    return height


class StyleGAN2(GenerativeModel):
    """B-SG, M-SG or C-SG (``params.variant``) with ADA."""

    def __init__(self, params: StyleGAN2Params, data: DataInfo) -> None:
        super().__init__()
        resolution = check_data_shape(tuple(data.shape))
        self.params, self.variant, self.shape = params, params.variant, tuple(data.shape)
        self.capabilities = Capabilities(outputs=OUTPUTS[params.variant], truncation=True)
        self.latent_dim = params.z_dim
        self.image_channels = data.image_channels
        self.r1_gamma = auto_r1_gamma(resolution) if params.r1_gamma is None else params.r1_gamma
        if self.variant == "M-SG":
            self.codec = MaskOnlyCodec(params.pairing, data.num_labels)
        else:
            self.codec = PairCodec(params.pairing, data.image_channels, data.num_labels)
        if self.variant == "C-SG":  # G makes the image; the one-hot mask is the condition of G and D
            g_out, d_in, cond, activation = data.image_channels, data.image_channels, self.codec.num_labels, torch.tanh
        else:
            g_out = d_in = self.codec.channels
            cond, activation = 0, self.codec.activate
        arch = dict(channel_base=params.channel_base, channel_max=params.channel_max, cond_channels=cond)
        self.nets = torch.nn.ModuleDict({
            "G": Generator(params.z_dim, params.w_dim, resolution, g_out, mapping_layers=params.mapping_layers,
                           mapping_lr_multiplier=params.mapping_lr_multiplier, output_activation=activation,
                           w_avg_beta=params.w_avg_beta, **arch),
            "D": Discriminator(d_in, resolution, mbstd_group_size=params.mbstd_group_size,
                               mbstd_channels=params.mbstd_channels, **arch),
        })
        # outside `nets`: no optimiser; its state travels through extra_state()
        # (M-SG has no image channel; `_augmented` gives the pipe a blank one)
        self.augment = AdaptiveAugment(params.augment, image_channels=1 if self.variant == "M-SG" else data.image_channels)
        self.register_buffer("pl_mean", torch.zeros([]))  # moving average of path lengths
        self.init_ema()

    # --- what D sees -----------------------------------------------------------------------------
    def _augmented(self, x: torch.Tensor, condition: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ADA on D's input; the condition mask gets the same geometric transform as its image."""
        if self.variant == "M-SG":
            # the pipe needs an image channel: a blank one takes the colour transforms and is dropped
            blank = x.new_zeros(x.shape[0], 1, *x.shape[2:])
            return self.augment(torch.cat([blank, x], dim=1))[:, 1:], None
        if condition is None:
            return self.augment(x), None
        both = self.augment(torch.cat([x, condition.to(x.dtype)], dim=1))
        return both[:, : x.shape[1]], both[:, x.shape[1]:]

    def _logits(self, discriminator, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        x, condition = self._augmented(x, condition)
        return discriminator(x, condition)

    def _split_real(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Network tensor -> (what D judges, the condition): C-SG splits off the mask as one-hot."""
        if self.variant != "C-SG":
            return real, None
        _, labels = self.codec.decode(real)
        return real[:, : self.image_channels], self.one_hot(labels).to(real.dtype)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """int masks [B, H, W] -> one-hot float [B, L, H, W] (binarised first if the pairing says so)."""
        labels = (labels > 0).long() if self.codec.config.binarize else labels.long()
        return F.one_hot(labels, self.codec.num_labels).movedim(-1, 1).float()

    def _z(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=like.device)

    # --- training ----------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        phases = [Phase("Gmain", "G")]
        if self.params.pl_weight > 0:
            phases.append(Phase("Greg", "G", self.params.pl_interval))
        phases.append(Phase("Dmain", "D"))
        if self.r1_gamma > 0:
            phases.append(Phase("Dreg", "D", self.params.r1_interval))
        return phases

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        real, condition = self._split_real(real)
        if phase == "Gmain":
            return self._generator_main(real, condition)
        if phase == "Greg":
            return self._path_length(real, condition)
        if phase == "Dmain":
            return self._discriminator_main(real, condition)
        if phase == "Dreg":
            return self._r1(real, condition)
        raise ValueError(f"unknown phase {phase!r}")

    def _generator_main(self, real: torch.Tensor, condition: torch.Tensor | None) -> dict[str, torch.Tensor]:
        fake = self.training_nets["G"](self._z(real.shape[0], real), condition, mixing_prob=self.params.style_mixing_prob,
                             update_w_avg=True)
        critic = self.nets["D"]  # unwrapped: only G's gradients are wanted here
        critic.requires_grad_(False)
        logits = self._logits(critic, fake, condition)
        critic.requires_grad_(True)
        loss = losses.g_loss_nonsaturating(logits.float())
        loss.backward()
        return {"loss/G": loss.detach()}

    def _path_length(self, real: torch.Tensor, condition: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Path-length regularisation: Jacobian norms of G w.r.t. w toward their moving average."""
        n = max(real.shape[0] // self.params.pl_batch_shrink, 1)
        cond = None if condition is None else condition[:n]
        fake, ws = self.training_nets["G"](self._z(n, real), cond, mixing_prob=self.params.style_mixing_prob, return_ws=True)
        noise = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
        (grads,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
        lengths = grads.float().square().sum(dim=2).mean(dim=1).sqrt()  # [n]
        with torch.no_grad():
            self.pl_mean.copy_(self.pl_mean.lerp(lengths.mean(), self.params.pl_decay))
        penalty = (lengths - self.pl_mean).square().mean()
        # "+ fake.sum() * 0": see _r1. Today every G parameter also gets a gradient from the penalty, but
        # only through the nonlinear output activation (a linear one would leave the last bias out).
        (penalty * self.params.pl_weight * self.params.pl_interval + fake.float().sum() * 0).backward()
        return {"pl_penalty": penalty.detach(), "pl_mean": self.pl_mean.detach().clone()}

    def _discriminator_main(self, real: torch.Tensor, condition: torch.Tensor | None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.nets["G"](self._z(real.shape[0], real), condition, mixing_prob=self.params.style_mixing_prob)
        critic = self.training_nets["D"]
        fake_logits = self._logits(critic, fake.to(real.dtype), condition).float()
        real_logits = self._logits(critic, real, condition).float()
        self.augment.observe(real_logits.detach())
        loss = losses.d_loss_nonsaturating(real_logits, fake_logits)
        loss.backward()
        return {"loss/D": loss.detach(), "D_real_sign": real_logits.detach().sign().mean(),
                **self.augment.stats_tensors()}

    def _r1(self, real: torch.Tensor, condition: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """R1 = gamma/2 E ||grad_x D(aug(x))||^2, scaled by the lazy interval.

        As in ADA, the gradient is taken at the un-augmented reals, through the (twice differentiable)
        augmentation; for C-SG with respect to the image, the mask being the condition.
        """
        real = real.detach().requires_grad_(True)
        logits = self._logits(self.training_nets["D"], real, condition)
        (grads,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
        penalty = grads.float().square().sum(dim=[1, 2, 3]).mean()
        # "+ logits.sum() * 0" adds nothing but puts every parameter of D in this backward pass, as in
        # StyleGAN2-ADA: a DistributedDataParallel wrapper averages the gradients of a backward pass only
        # once every parameter has received one, and the penalty reaches only those the input gradient
        # depends on (not D's last bias), so DDP stops with "Expected to have finished reduction".
        (penalty * (self.r1_gamma / 2) * self.params.r1_interval + logits.float().sum() * 0).backward()
        return {"r1": penalty.detach()}

    # --- state outside the networks ------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"augment": self.augment.state_dict(), "pl_mean": self.pl_mean.detach().clone()}

    def load_extra_state(self, state: dict) -> None:
        if "augment" in state:
            self.augment.load_state_dict(state["augment"])
        if "pl_mean" in state:
            self.pl_mean.copy_(state["pl_mean"])

    # --- sampling ------------------------------------------------------------------------------------
    def check_masks(self, n: int, masks: torch.Tensor | None) -> torch.Tensor:
        return self.check_given_masks(n, masks, tuple(self.shape))

    def sampling_inputs(self, n: int, rng: torch.Generator, truncation: float = 1.0,
                        masks: torch.Tensor | None = None, **options) -> dict:
        """Truncation psi (toward the tracked mean w) and, for C-SG, the checked masks. Noise inputs are the
        networks' fixed noise buffers (StyleGAN2's "const" noise), so results depend on the seed alone."""
        given = self.check_masks(n, masks) if self.variant == "C-SG" else None
        return {"truncation": truncation, "masks": given}

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, H, W] in [-1, 1] (C = 0 for M-SG) and masks [B, H, W]."""
        if inputs["masks"] is None:
            return self.codec.decode(net(z, truncation=inputs["truncation"], noise_mode="const"))
        mask = inputs["masks"][part]
        image = net(z, self.one_hot(mask).to(z.device), truncation=inputs["truncation"], noise_mode="const").float()
        return image, (mask > 0).long() if self.codec.config.binarize else mask


@register_model("stylegan2", StyleGAN2Params)
def build_stylegan2(params: StyleGAN2Params, data: DataInfo) -> StyleGAN2:
    return StyleGAN2(params, data)
