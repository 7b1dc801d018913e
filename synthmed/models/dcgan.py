"""DCGAN and WGAN (weight clipping or gradient penalty) in 2D and 3D: the thesis's baselines.

Generator: z -> linear -> a small feature map -> stride-2 transposed convolutions up to the target
shape -> image and mask channels (see ``pairing``). Discriminator / critic: the mirror image with
stride-2 convolutions and a linear score. The number of spatial axes of the data shape picks the layers
(Conv2d for (H, W), Conv3d for (D, H, W)); ``dcgan2d`` / ``wgan2d`` accept only 2D data and
``dcgan3d`` / ``wgan3d`` only 3D data. Shapes may be anisotropic (e.g. 64x64x32, 64x32): the smallest
side must be a power of two >= 8 and the others divisible by the same number of halvings.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from synthmed.errors import UserError
from synthmed.models.base import Capabilities, GenerativeModel, Phase
from synthmed.models.pairing import PairCodec, PairingConfig
from synthmed.models.registry import DataInfo, register_model
from synthmed.models import losses

Norm = Literal["batch", "instance", "layer", "none"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


class DCGANParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latent_dim: int = Field(128, ge=1)
    base_channels: int = Field(16, ge=1)  # channels at full resolution; doubled at each halving
    max_channels: int = Field(256, ge=1)
    pairing: PairingConfig = PairingConfig()
    d_norm: Norm = "batch"


class WGANParams(DCGANParams):
    constraint: Literal["gp", "clip"] = "gp"
    d_norm: Norm = "layer"  # no batch norm in a gradient-penalty critic (Gulrajani et al.)
    n_critic: int = Field(5, ge=1)  # critic steps per generator step
    gp_weight: float = Field(10.0, ge=0)
    clip_value: float = Field(0.01, gt=0)


def num_halvings(shape: tuple[int, ...]) -> int:
    """How many stride-2 levels take ``shape`` down to a smallest side of 4.

    Raises:
        UserError: the smallest side is not a power of two >= 8, or another side is not divisible.
    """
    smallest = min(shape)
    levels = int(round(math.log2(smallest))) - 2
    if smallest < 8 or 2 ** (levels + 2) != smallest or any(s % 2**levels for s in shape):
        kind, example = ("image", "32x32, 64x32") if len(shape) == 2 else ("volume", "32x32x32, 64x64x32")
        raise UserError(
            f"{kind} shape {list(shape)} is not supported: the smallest side must be a power of two >= 8 "
            f"and every side divisible by it / 4 (e.g. {example})"
        )
    return levels


def require_dims(model_name: str, shape: tuple[int, ...], dims: int, counterpart: str) -> None:
    """Refuse data whose number of spatial axes is not the model's (a 2D model on volumes, ...).

    Raises:
        UserError: naming the model, the data's shape and the ``counterpart`` model for the other case.
    """
    if len(shape) == dims:
        return
    wanted = "2D images (H, W)" if dims == 2 else "3D volumes (D, H, W)"
    raise UserError(f"model.name: {model_name!r} generates {wanted} but the data have shape {list(shape)} "
                    f"({len(shape)} spatial axes); use {counterpart!r} for them")


def _channels(base: int, cap: int, level: int) -> int:
    return min(cap, base * 2**level)


def _norm(kind: Norm, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return _BATCH_NORM[dims](channels)
    if kind == "instance":
        return _INSTANCE_NORM[dims](channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class Generator(nn.Module):
    def __init__(self, latent_dim: int, out_channels: int, shape: tuple[int, ...], base: int, cap: int, codec: PairCodec):
        super().__init__()
        dims, levels = len(shape), num_halvings(shape)
        self.codec = codec
        self.start_shape = tuple(s // 2**levels for s in shape)
        self.start_channels = _channels(base, cap, levels)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, self.start_channels * math.prod(self.start_shape), bias=False),
        )
        self.project_norm = nn.Sequential(_BATCH_NORM[dims](self.start_channels), nn.ReLU(inplace=True))
        blocks = []
        for level in range(levels, 0, -1):
            c_in, c_out = _channels(base, cap, level), _channels(base, cap, level - 1)
            blocks += [_CONV_TRANSPOSE[dims](c_in, c_out, 4, 2, 1, bias=False), _BATCH_NORM[dims](c_out), nn.ReLU(inplace=True)]
        self.blocks = nn.Sequential(*blocks)
        self.to_output = _CONV[dims](base, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.start_channels, *self.start_shape)  # [B,C,*start]
        x = self.blocks(self.project_norm(x))
        return self.codec.activate(self.to_output(x))


class Discriminator(nn.Module):
    def __init__(self, in_channels: int, shape: tuple[int, ...], base: int, cap: int, norm: Norm):
        super().__init__()
        dims, levels = len(shape), num_halvings(shape)
        conv = _CONV[dims]
        layers: list[nn.Module] = [conv(in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for level in range(1, levels):
            c_in, c_out = _channels(base, cap, level - 1), _channels(base, cap, level)
            layers += [conv(c_in, c_out, 4, 2, 1, bias=norm == "none"), _norm(norm, c_out, dims), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        end_shape = [s // 2**levels for s in shape]
        self.score = nn.Linear(_channels(base, cap, levels - 1) * math.prod(end_shape), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x).flatten(1)).squeeze(1)


_WEIGHTS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)


def dcgan_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), norm scales from N(1, 0.02), as in Radford et al."""
    if isinstance(module, _WEIGHTS):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, _NORMS) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGAN(GenerativeModel):
    """The DCGAN architecture trained as DCGAN (non-saturating BCE) or WGAN (clip / GP), chosen by ``loss``."""

    capabilities = Capabilities(outputs="pairs")

    def __init__(self, params: DCGANParams, data: DataInfo, loss: Literal["bce", "wgan"]):
        super().__init__()
        self.params = params
        self.loss = loss
        self.latent_dim = params.latent_dim
        self.codec = PairCodec(params.pairing, data.image_channels, data.num_labels)
        net_shape = self.codec.network_shape(tuple(data.shape))
        channels = self.codec.channels
        self.nets = nn.ModuleDict({
            "G": Generator(params.latent_dim, channels, net_shape, params.base_channels, params.max_channels, self.codec),
            "D": Discriminator(channels, net_shape, params.base_channels, params.max_channels, params.d_norm),
        })
        self.nets.apply(dcgan_init)
        self.init_ema()

    def phases(self) -> list[Phase]:
        g_interval = self.params.n_critic if isinstance(self.params, WGANParams) else 1
        return [Phase("D", "D"), Phase("G", "G", interval=g_interval)]

    def _noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=like.device)

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        n = real.shape[0]
        if phase == "D":
            with torch.no_grad():
                fake = self.nets["G"](self._noise(n, real))
            return self._discriminator_step(real, fake.to(real.dtype))
        if phase == "G":
            fake = self.training_nets["G"](self._noise(n, real))
            critic = self.nets["D"]  # unwrapped: only G's gradients are wanted here
            critic.requires_grad_(False)
            scores = critic(fake)
            critic.requires_grad_(True)
            loss = losses.g_loss_nonsaturating(scores) if self.loss == "bce" else losses.g_loss_wasserstein(scores)
            loss.backward()
            return {"loss/G": loss.detach()}
        raise ValueError(f"unknown phase {phase!r}")

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        # Real and fake go through D in separate passes: with batch norm, a mixed batch would let D
        # tell them apart by batch statistics that the generator's fake-only pass never sees.
        critic = self.training_nets["D"]
        real_s, fake_s = critic(real), critic(fake)
        if self.loss == "bce":
            loss = losses.d_loss_nonsaturating(real_s, fake_s)
            loss.backward()
            return {"loss/D": loss.detach()}
        loss = losses.d_loss_wasserstein(real_s, fake_s)
        out = {"loss/D": loss.detach(), "wasserstein_estimate": -loss.detach()}
        if self.params.constraint == "gp":
            mixed = losses.interpolate(real, fake)
            penalty = losses.gradient_penalty(critic(mixed), mixed)
            loss = loss + self.params.gp_weight * penalty
            out["gradient_penalty"] = penalty.detach()
        loss.backward()
        return out

    @torch.no_grad()
    def after_optimizer_step(self, phase: str) -> None:
        if phase == "D" and self.loss == "wgan" and self.params.constraint == "clip":
            for p in self.nets["D"].parameters():
                p.clamp_(-self.params.clip_value, self.params.clip_value)


def _build(name: str, dims: int, params: DCGANParams, data: DataInfo, loss: Literal["bce", "wgan"]) -> DCGAN:
    require_dims(name, tuple(data.shape), dims, counterpart=name.replace(f"{dims}d", f"{5 - dims}d"))
    return DCGAN(params, data, loss)


@register_model("dcgan2d", DCGANParams)
def build_dcgan2d(params: DCGANParams, data: DataInfo) -> DCGAN:
    return _build("dcgan2d", 2, params, data, loss="bce")


@register_model("wgan2d", WGANParams)
def build_wgan2d(params: WGANParams, data: DataInfo) -> DCGAN:
    return _build("wgan2d", 2, params, data, loss="wgan")


@register_model("dcgan3d", DCGANParams)
def build_dcgan3d(params: DCGANParams, data: DataInfo) -> DCGAN:
    return _build("dcgan3d", 3, params, data, loss="bce")


@register_model("wgan3d", WGANParams)
def build_wgan3d(params: WGANParams, data: DataInfo) -> DCGAN:
    return _build("wgan3d", 3, params, data, loss="wgan")
