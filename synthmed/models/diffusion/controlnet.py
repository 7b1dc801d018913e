"""ControlNet conditioning of latent diffusion on the mask (``params.controlnet``, MAISI's approach).

MONAI's ``ControlNet`` is a trainable copy of the diffusion U-Net's encoder; its conditioning embedding takes
the mask's signed one-hot channels at full resolution and brings them down to the latent grid with strided
convolutions (one per autoencoder downsampling). Its zero-initialised output convolutions add residuals to the
frozen U-Net's skip connections, so an untrained ControlNet leaves the U-Net's samples unchanged.

It trains as a third phase, after the autoencoder and the U-Net: at its first step the U-Net takes its EMA
weights (the ones sampling uses) and freezes, and the ControlNet starts as a copy of it (as MONAI's and
MAISI's ControlNet training do). The ControlNet has no EMA of its own: sampling uses its trained weights.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ControlNet
from monai.networks.utils import copy_model_state
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class ControlNetParams(BaseModel):
    """``params.controlnet`` of a latent diffusion model."""

    model_config = ConfigDict(extra="forbid")

    unet_steps: int = Field(ge=1)  # the U-Net trains for these steps after the autoencoder; then the ControlNet
    embedding_channels: list[int] | None = None  # mask embedding widths, one per autoencoder level (default 16, 32, ...)
    conditioning_scale: float = Field(1.0, ge=0)  # weight of the ControlNet's residuals, training and sampling


class MaskControlNet(nn.Module):
    """A MONAI ``ControlNet`` on the mask, and whether it has started from the U-Net (buffer ``initialised``)."""

    def __init__(self, net: ControlNet, conditioning_scale: float) -> None:
        super().__init__()
        self.net, self.conditioning_scale = net, conditioning_scale
        self.register_buffer("initialised", torch.tensor(False))

    def start_from(self, unet: nn.Module) -> None:
        """Copy the U-Net's matching weights (time and class embeddings, encoder, middle block) once per run."""
        if bool(self.initialised):
            return
        copy_model_state(self.net, unet.state_dict())
        self.initialised.fill_(True)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The residuals for the U-Net's down blocks and middle block, from noisy latents and the mask condition."""
        return self.net(x, timesteps, controlnet_cond=condition.to(x.dtype),
                        conditioning_scale=self.conditioning_scale, class_labels=class_labels)
