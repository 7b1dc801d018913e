"""A small convolutional autoencoder trained on the real train split: a learned feature space offline.

Encoder: three stride-2 convolutions (8, 16, 32 channels, LeakyReLU); decoder: the mirror image with
transposed convolutions; loss: mean squared error. Inputs are edge-padded to a multiple of 8 and the
reconstruction cropped back. Features: the bottleneck average-pooled to 2 per axis and flattened
(256-d in 3D, 128-d in 2D). Training is seeded, so equal seeds give equal features on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthmed.errors import UserError
from synthmed.metrics.extractors.base import FeatureExtractor, register_feature_extractor

CHANNELS = (8, 16, 32)
AE_STEPS = 150  # optimiser steps
AE_BATCH = 8
AE_LR = 1e-3
POOLED = 2  # bottleneck cells per axis kept as features
MULTIPLE = 2 ** len(CHANNELS)


class ConvAutoencoder(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int = 1):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        deconv = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        widths = (in_channels, *CHANNELS)
        enc, dec = [], []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            enc += [conv(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths[::-1][:-1], widths[::-1][1:]):
            dec += [deconv(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec[:-1])  # linear output
        self.spatial_dims = spatial_dims

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in reversed(x.shape[2:]):
            pads += [0, (-size) % MULTIPLE]
        return F.pad(x, pads, mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(self.pad(x)))
        return out[(slice(None), slice(None), *[slice(0, s) for s in x.shape[2:]])]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(self.pad(x))
        pool = F.adaptive_avg_pool3d if self.spatial_dims == 3 else F.adaptive_avg_pool2d
        return torch.flatten(pool(z, POOLED), 1)


class AutoencoderExtractor(FeatureExtractor):
    """Bottleneck features of a conv autoencoder fitted on the real train images (3D)."""

    name = "autoencoder"
    spatial_dims = 3
    needs_fit = True
    uses_device = True

    def __init__(self, steps: int = AE_STEPS, batch_size: int = AE_BATCH, lr: float = AE_LR, device: str = "cpu"):
        if steps < 1 or batch_size < 1 or lr <= 0:
            raise UserError(f"autoencoder: steps and batch_size must be >= 1 and lr > 0 (got {steps}, {batch_size}, {lr})")
        self.steps, self.batch_size, self.lr, self.device = steps, batch_size, lr, torch.device(device)
        self.net: ConvAutoencoder | None = None
        self.final_loss: float | None = None

    def fit(self, images: np.ndarray, seed: int = 0) -> None:
        images = np.asarray(images, np.float32)
        if images.ndim != self.spatial_dims + 2 or len(images) == 0:
            raise UserError(f"autoencoder: needs real train images [N >= 1, C, *{self.spatial_dims}D], got shape {list(images.shape)}")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.net = ConvAutoencoder(self.spatial_dims, images.shape[1]).to(self.device)
        optimiser = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        data = torch.from_numpy(images)
        for _ in range(self.steps):
            batch = data[rng.integers(0, len(data), min(self.batch_size, len(data)))].to(self.device)
            loss = F.mse_loss(self.net(batch), batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        self.final_loss = float(loss.detach())
        self.net.eval().requires_grad_(False)

    def extract(self, images: np.ndarray) -> np.ndarray:
        if self.net is None:
            raise RuntimeError("AutoencoderExtractor.extract called before fit")
        with torch.inference_mode():
            return self.net.features(torch.from_numpy(np.asarray(images, np.float32)).to(self.device)).cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "steps": self.steps, "final_mse": self.final_loss}


class Autoencoder2DExtractor(AutoencoderExtractor):
    """The same for 2D images."""

    name = "autoencoder_2d"
    spatial_dims = 2


register_feature_extractor(AutoencoderExtractor.name, AutoencoderExtractor)
register_feature_extractor(Autoencoder2DExtractor.name, Autoencoder2DExtractor)
