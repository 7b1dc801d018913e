"""Building blocks of StyleGAN2 (Karras et al. 2020) in plain PyTorch.

Every weight uses the equalised learning rate: parameters are stored as N(0, 1) (divided by the
learning-rate multiplier) and scaled by ``lr_multiplier / sqrt(fan_in)`` at run time, so Adam sees
weights of the same scale in every layer.

Simplifications against the official code, on purpose:
- resampling is bilinear upsampling (x2) and 2x2 average pooling instead of the [1, 3, 3, 1] FIR
  filters of ``upfirdn2d``; both are low-pass, the FIR filter is slightly sharper;
- no custom CUDA ops (``bias_act``, ``conv2d_gradfix``, ``grid_sample_gradfix``): everything is ordinary
  differentiable PyTorch, so the double backward of R1 and path-length regularisation works on any
  device and any PyTorch version.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the second moment of N(0, 1) inputs through a leaky ReLU


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) with gain sqrt(2)."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def resample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (one-hot) mask to ``size``: area averaging when shrinking (label fractions), nearest when not."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-1] > size[-1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalised learning rate and an optional leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        x = F.linear(x, self.weight * self.weight_gain, bias)
        return lrelu(x) if self.activation == "lrelu" else x


class EqualizedConv2d(nn.Module):
    """Convolution with equalised learning rate; ``down`` halves the resolution (average pool, then conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: bool = False) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
        self.activation, self.down, self.padding = activation, down, kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:  # pooling before the conv: same low-pass, a quarter of the convolution cost
            x = downsample2x(x)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return lrelu(x) if self.activation == "lrelu" else x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     fused: bool = True) -> torch.Tensor:
    """StyleGAN2's modulated convolution: per-sample input-channel scales, then (optionally) demodulation.

    Args:
        x: activations [B, I, H, W].
        weight: shared kernel [O, I, k, k] (already multiplied by its equalised-lr gain).
        styles: per-sample scales of the input channels [B, I].
        demodulate: rescale each output channel so that unit-variance inputs give unit-variance outputs.
        fused: scale the weights per sample and run one grouped convolution (fast at inference), or
            scale the activations, run the shared convolution and scale the outputs (same result; the
            faster backward pass in training).
    """
    batch, in_channels = x.shape[:2]
    out_channels, _, kh, kw = weight.shape
    padding = kh // 2
    if fused:
        w = weight.unsqueeze(0) * styles[:, None, :, None, None]  # [B,O,I,k,k]
        if demodulate:
            w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        x = x.reshape(1, batch * in_channels, *x.shape[2:])
        out = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw), padding=padding, groups=batch)
        return out.reshape(batch, out_channels, *out.shape[2:])
    out = F.conv2d(x * styles[:, :, None, None].to(x.dtype), weight, padding=padding)
    if demodulate:  # sum_{i,k} (w_oik s_i)^2 = s^2 @ (sum_k w_oik^2)^T, without the [B,O,I,k,k] tensor
        coefficients = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [B,O]
        out = out * coefficients[:, :, None, None].to(out.dtype)
    return out
