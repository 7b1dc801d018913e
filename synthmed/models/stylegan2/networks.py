"""StyleGAN2 networks (Karras et al. 2020): mapping, skip generator, residual discriminator.

An optional condition (C-SG of Vu et al.: a one-hot mask [B, L, H, W]) is resized to every resolution and
concatenated to the input of each modulated convolution and toRGB layer of the generator (that is, after
each weight-demodulated convolution, and to the constant input), and to the input of fromRGB and of every
residual block of the discriminator.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import nn

from synthmed.models.layers import MinibatchStdDev
from synthmed.models.stylegan2.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    lrelu,
    modulated_conv2d,
    normalize_2nd_moment,
    resample_to,
    upsample2x,
)

NoiseMode = Literal["random", "const", "none"]


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at one resolution: ``min(channel_base / resolution, channel_max)`` (the official rule)."""
    return max(1, min(channel_base // resolution, channel_max))


def with_condition(x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    if condition is None:
        return x
    return torch.cat([x, resample_to(condition, tuple(x.shape[-2:])).to(x.dtype)], dim=1)


class MappingNetwork(nn.Module):
    """z -> w: normalised z through ``num_layers`` fully connected layers; tracks the mean w for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 2, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.num_ws, self.w_avg_beta = num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[
            EqualizedLinear(a, b, activation="lrelu", lr_multiplier=lr_multiplier) for a, b in zip(dims[:-1], dims[1:])
        ])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        """z [B, z_dim] -> ws [B, num_ws, w_dim] (one w per synthesis layer, all equal before mixing)."""
        w = self.layers(normalize_2nd_moment(z.float()))
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation != 1.0:  # w' = w_avg + psi (w - w_avg)
            ws = self.w_avg.to(ws.dtype).lerp(ws, truncation)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated + demodulated 3x3 conv, noise with learned per-channel strength, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.up = up
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        if self.up:  # simplification: bilinear x2 then conv, instead of a transposed conv + FIR filter
            x = upsample2x(x)
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, fused=not self.training)
        if noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
            else:
                noise = self.noise_const.to(x.dtype)
            x = x + noise * self.noise_strength.view(1, -1, 1, 1).to(x.dtype)
        return lrelu(x + self.bias.view(1, -1, 1, 1).to(x.dtype))


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation: features -> output channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=not self.training)
        return x + self.bias.view(1, -1, 1, 1).to(x.dtype)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (constant or upsampling conv), conv, toRGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, out_image_channels: int,
                 cond_channels: int) -> None:
        super().__init__()
        self.is_first = resolution == 4
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_channels + cond_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels + cond_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels + cond_channels, out_image_channels, w_dim)
        self.num_conv = 1 if self.is_first else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                condition: torch.Tensor | None, noise_mode: NoiseMode) -> tuple[torch.Tensor, torch.Tensor]:
        """ws [B, num_conv + 1, w_dim]; returns features and the running output image (skip sum)."""
        layer_ws = iter(ws.unbind(dim=1))
        if self.is_first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1).to(ws.dtype)
        else:
            x = self.conv0(with_condition(x, condition), next(layer_ws), noise_mode)
        x = self.conv1(with_condition(x, condition), next(layer_ws), noise_mode)
        y = self.torgb(with_condition(x, condition), next(layer_ws))
        img = y if img is None else upsample2x(img).to(y.dtype) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws -> image through blocks at 4, 8, ..., resolution (toRGB at every resolution, upsampled and summed)."""

    def __init__(self, w_dim: int, resolution: int, out_channels: int, channel_base: int, channel_max: int,
                 cond_channels: int = 0) -> None:
        super().__init__()
        self.resolutions = [2**k for k in range(2, int(math.log2(resolution)) + 1)]
        self.blocks = nn.ModuleList()
        for res in self.resolutions:
            c_in = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            c_out = channels_at(res, channel_base, channel_max)
            self.blocks.append(SynthesisBlock(c_in, c_out, w_dim, res, out_channels, cond_channels))
        # consecutive blocks share one w: a block's toRGB w is the next block's first conv w
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: torch.Tensor, condition: torch.Tensor | None = None,
                noise_mode: NoiseMode = "random") -> torch.Tensor:
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index : index + block.num_conv + 1], condition, noise_mode)
            index += block.num_conv
        return img


class Generator(nn.Module):
    """Mapping + synthesis, with style mixing, truncation and an output activation.

    ``output_activation`` maps the raw output to the network tensor's range (tanh for images, softmax over
    one-hot mask channels; see ``PairCodec.activate``). The official StyleGAN2 output is linear; a bounded
    output keeps generated and real tensors in the same range, as the other synthmed models do.
    """

    def __init__(self, z_dim: int, w_dim: int, resolution: int, out_channels: int, channel_base: int,
                 channel_max: int, mapping_layers: int, mapping_lr_multiplier: float, cond_channels: int,
                 output_activation: Callable[[torch.Tensor], torch.Tensor], w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.z_dim, self.cond_channels = z_dim, cond_channels
        self.synthesis = SynthesisNetwork(w_dim, resolution, out_channels, channel_base, channel_max, cond_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_multiplier, w_avg_beta)
        self.output_activation = output_activation

    def forward(self, z: torch.Tensor, condition: torch.Tensor | None = None, truncation: float = 1.0,
                mixing_prob: float = 0.0, noise_mode: NoiseMode = "random", update_w_avg: bool = False,
                return_ws: bool = False):
        """z [B, z_dim] (+ condition [B, L, H, W]) -> output [B, C, H, W] (and the ws used, for path length)."""
        if (condition is None) != (self.cond_channels == 0):
            raise ValueError(f"generator expects a condition with {self.cond_channels} channels; got "
                             f"{None if condition is None else list(condition.shape)}")
        ws = self.mapping(z, truncation, update_w_avg)
        if mixing_prob > 0:
            ws = self.mix_styles(ws, truncation, mixing_prob)
        out = self.output_activation(self.synthesis(ws, condition, noise_mode))
        return (out, ws) if return_ws else out

    def mix_styles(self, ws: torch.Tensor, truncation: float, prob: float) -> torch.Tensor:
        """Style mixing regularisation: with probability ``prob`` per sample, the layers from a random
        cutoff on take the w of a second latent."""
        batch, num_ws = ws.shape[:2]
        second = self.mapping(torch.randn(batch, self.z_dim, device=ws.device), truncation)
        cutoff = torch.randint(1, num_ws, (batch,), device=ws.device)
        cutoff = torch.where(torch.rand(batch, device=ws.device) < prob, cutoff, torch.full_like(cutoff, num_ws))
        use_second = torch.arange(num_ws, device=ws.device)[None, :] >= cutoff[:, None]  # [B, num_ws]
        return torch.where(use_second[:, :, None], second.to(ws.dtype), ws)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second halves the resolution) plus a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels + cond_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", down=True)
        self.skip = EqualizedConv2d(in_channels + cond_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        x = with_condition(x, condition)
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)  # keeps the variance of the sum


class Discriminator(nn.Module):
    """fromRGB at full resolution, residual blocks down to 4x4, minibatch stddev, conv, FC, FC -> logit."""

    def __init__(self, in_channels: int, resolution: int, channel_base: int, channel_max: int,
                 cond_channels: int = 0, mbstd_group_size: int = 4, mbstd_channels: int = 1) -> None:
        super().__init__()
        self.cond_channels = cond_channels
        self.fromrgb = EqualizedConv2d(in_channels + cond_channels, channels_at(resolution, channel_base, channel_max),
                                       1, activation="lrelu")
        resolutions = [2**k for k in range(int(math.log2(resolution)), 2, -1)]  # resolution ... 8
        self.blocks = nn.ModuleList([
            DiscriminatorBlock(channels_at(r, channel_base, channel_max), channels_at(r // 2, channel_base, channel_max),
                               cond_channels)
            for r in resolutions
        ])
        c4 = channels_at(4, channel_base, channel_max)
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_channels)
        self.conv = EqualizedConv2d(c4 + mbstd_channels, c4, 3, activation="lrelu")
        self.fc = EqualizedLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualizedLinear(c4, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, H, W] (+ condition [B, L, H, W]) -> logits [B]."""
        if (condition is None) != (self.cond_channels == 0):
            raise ValueError(f"discriminator expects a condition with {self.cond_channels} channels")
        x = self.fromrgb(with_condition(x, condition))
        for block in self.blocks:
            x = block(x, condition)
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
