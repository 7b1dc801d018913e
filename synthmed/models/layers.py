"""Layers shared by several families, for 2D and 3D feature maps alike."""

from __future__ import annotations

import math

import torch
from torch import nn


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """The spread of a batch (ProGAN's minibatch standard deviation), so a discriminator sees its diversity.

    Samples ``i, i + B/G, i + 2B/G, ...`` form a group of ``G = gcd(B, group_size)`` (a divisor of the
    batch, so odd per-GPU batches work). Per group, the standard deviation over its samples is averaged over
    each of ``num_channels`` equal slices of the channels (and every position).

    Args:
        x: features [B, C, *S], C divisible by ``num_channels``.

    Returns:
        [B, num_channels]: each sample's group statistics.
    """
    batch = x.shape[0]
    group = math.gcd(batch, group_size)
    y = x.float().reshape(group, batch // group, num_channels, -1)  # [G, n, F, C/F * S]
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # std over the group [n, F, C/F * S]
    return y.mean(dim=2).repeat(group, 1).to(x.dtype)  # [B, F]


class MinibatchStdDev(nn.Module):
    """Appends `minibatch_stddev` to the features as ``num_channels`` constant channels. No weights."""

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = minibatch_stddev(x, self.group_size, self.num_channels)  # [B, F]
        spatial = x.shape[2:]
        return torch.cat([x, std.view(*std.shape, *[1] * len(spatial)).expand(-1, -1, *spatial)], dim=1)
