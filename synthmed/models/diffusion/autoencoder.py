"""The autoencoder of latent diffusion: MONAI's ``AutoencoderKL`` (no attention, as MAISI's VAE) with the
scale factor that brings its latents to unit standard deviation, as MONAI's latent diffusion tutorials do.

The scale factor is a buffer of the network, so checkpoints and resumes keep it with the weights.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn


class AutoencoderParams(BaseModel):
    """``params.autoencoder`` of a latent diffusion model."""

    model_config = ConfigDict(extra="forbid")

    channels: list[int] = [32, 64, 64]  # feature maps per level; the latent is 2^(levels - 1) times smaller per side
    latent_channels: int = Field(4, ge=1)
    num_res_blocks: int = Field(1, ge=1)
    norm_num_groups: int = Field(8, ge=1)  # GroupNorm groups; must divide every width
    kl_weight: float = Field(1e-6, ge=0)  # weight of the KL term next to the L1 reconstruction (MONAI tutorials: 1e-6)
    steps: int = Field(1000, ge=1)  # the autoencoder trains for these first steps, then the U-Net on its latents
    scale_factor: float | None = Field(None, gt=0)  # None: 1 / std of the first diffusion batch's latents

    @model_validator(mode="after")
    def _widths(self) -> "AutoencoderParams":
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"autoencoder: every entry of channels {self.channels} must be divisible by "
                             f"norm_num_groups {self.norm_num_groups}")
        return self

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channels) - 1)


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over each case's latent, averaged over the batch."""
    per_element = mu.float().pow(2) + sigma.float().pow(2) - torch.log(sigma.float().pow(2)) - 1
    return 0.5 * per_element.flatten(1).sum(dim=1).mean()


class LatentAutoencoder(nn.Module):
    """``AutoencoderKL`` plus the latents' scale factor (buffers ``scale_factor`` and ``scale_measured``)."""

    def __init__(self, params: AutoencoderParams, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.params = params
        self.kl = AutoencoderKL(
            spatial_dims=spatial_dims, in_channels=channels, out_channels=channels,
            num_res_blocks=params.num_res_blocks, channels=params.channels,
            attention_levels=[False] * len(params.channels), latent_channels=params.latent_channels,
            norm_num_groups=params.norm_num_groups, with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
        )
        given = params.scale_factor is not None
        self.register_buffer("scale_factor", torch.tensor(params.scale_factor if given else 1.0))
        self.register_buffer("scale_measured", torch.tensor(given))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training losses of a batch (its reconstruction from a sampled latent): L1, KL and their sum."""
        reconstruction, mu, sigma = self.kl(x)
        l1 = F.l1_loss(reconstruction.float(), x.float())
        kl = kl_divergence(mu, sigma)
        return {"recon": l1, "kl": kl, "total": l1 + self.params.kl_weight * kl}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Network tensors -> scaled latents (the posterior means); measures the scale factor on the first call."""
        mu = self.kl.encode(x)[0].float()
        if not bool(self.scale_measured):
            self._measure_scale(mu)
        return mu * self.scale_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> network tensors, clamped to [-1, 1]."""
        return self.kl.decode(latents / self.scale_factor).float().clamp(-1.0, 1.0)

    def _measure_scale(self, mu: torch.Tensor) -> None:
        std = mu.std()
        if dist.is_available() and dist.is_initialized():  # one factor for every replica
            dist.all_reduce(std)
            std /= dist.get_world_size()
        self.scale_factor.fill_(1.0 / float(std.clamp_min(1e-8)))
        self.scale_measured.fill_(True)
