"""FastGAN (Liu et al. 2021, "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis") for 2D image/mask pairs, 32x32 to 1024x1024.

Generator: z -> 4x4 (transposed convolution, batch norm, GLU) -> up-blocks (nearest upsampling, 3x3
convolution, batch norm, GLU; every other block has two convolutions and noise injection) -> 3x3
convolution -> image and mask channels (``pairing``). Skip-layer excitation (SLE) gates the channels
of a high-resolution stage with a vector computed from a stage 16 times smaller (8->128, 16->256,
32->512 in the paper, plus 4->64); a 32x32 generator, too small for a 16x ratio, gates 32 by 4.

Discriminator: an encoder of residual down-blocks to 8x8 features, a 5x5 map of real/fake logits
(hinge loss), and two small decoders trained on real images only (self-supervision): one rebuilds the
whole input (downsampled to at most 128x128) from the 8x8 features, the other a random quarter of it
from that quarter of the 16x16 features. The paper scores the reconstructions with LPIPS; no
pretrained LPIPS weights are available offline, so this module uses a pixel loss (L1 by default, or
MSE) on every channel the discriminator sees, image and mask alike.

DiffAugment (colour on the image channels, translation and cutout on all channels) is applied to real
and fake batches before every discriminator pass, the generator's included.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from synthmed.errors import UserError
from synthmed.models.augment import DIFF_POLICIES, diff_augment
from synthmed.models.base import Capabilities, GenerativeModel, Phase
from synthmed.models.pairing import PairCodec, PairingConfig
from synthmed.models.registry import DataInfo, register_model

MIN_SIZE, MAX_SIZE = 32, 1024
# Channels per resolution, as multiples of base_channels (the paper's width schedule).
G_WIDTH = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
D_WIDTH = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
DECODER_WIDTH = {r: w / 2 for r, w in G_WIDTH.items() if 16 <= r <= 128}  # the decoders are half as wide as G
D_WORKING_SIZE = 256  # larger inputs are first brought down to this size by strided convolutions
RECONSTRUCTION_SIZE = 128  # the decoders' largest output side


class FastGANParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latent_dim: int = Field(256, ge=1)
    base_channels: int = Field(64, ge=1)  # the paper's ngf = ndf; widths per resolution follow G_WIDTH / D_WIDTH
    max_channels: int = Field(1024, ge=1)  # cap on any layer's channels
    pairing: PairingConfig = PairingConfig()
    noise_injection: bool = True  # per-pixel noise, with learned strength, in the two-convolution up-blocks
    spectral_norm: bool = True  # on every convolution of G and D
    augment: str = "color,translation,cutout"  # DiffAugment policy applied before D; "" for none
    recon_weight: float = Field(1.0, ge=0)  # weight of the decoders' reconstruction loss in D's loss
    recon_loss: Literal["l1", "mse"] = "l1"  # pixel loss standing in for the paper's LPIPS

    @field_validator("augment")
    @classmethod
    def _known_policies(cls, policy: str) -> str:
        unknown = [name for name in (n.strip() for n in policy.split(",")) if name and name not in DIFF_POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown}; use a comma-separated subset of {', '.join(DIFF_POLICIES)}")
        return policy


def check_data(params: FastGANParams, data: DataInfo) -> int:
    """Return the image side, or raise UserError for data FastGAN does not generate."""
    if len(data.shape) != 2:
        raise UserError(f"model.name: 'fastgan' generates 2D images (H, W) but the data have shape {list(data.shape)} "
                        f"({len(data.shape)} spatial axes); for volumes use dcgan3d, wgan3d or hagan")
    height, width = data.shape
    if height != width or height not in G_WIDTH or not MIN_SIZE <= height <= MAX_SIZE:
        raise UserError(f"fastgan: image shape {list(data.shape)} is not supported: images must be square with a "
                        f"power-of-two side from {MIN_SIZE} to {MAX_SIZE} (e.g. 64x64, 256x256)")
    if params.pairing.layout != "channel":
        raise UserError("model.params.pairing.layout: fastgan needs 'channel' (the mask as extra channels); "
                        "'zconcat' would make the images non-square")
    return height


def sle_pairs(size: int) -> list[tuple[int, int]]:
    """(low, high) resolutions joined by skip-layer excitation in a generator of side ``size``."""
    ratio = min(16, size // 4)
    return [(low, low * ratio) for low in (4, 8, 16, 32) if low * ratio <= min(size, 512)]


def _width(table: dict[int, float], resolution: int, params: FastGANParams) -> int:
    return max(1, min(params.max_channels, int(params.base_channels * table[resolution])))


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, *, sn: bool,
          bias: bool = True, transpose: bool = False) -> nn.Module:
    """Convolution with weights from N(0, 0.02), optionally spectrally normalised."""
    layer = (nn.ConvTranspose2d if transpose else nn.Conv2d)(c_in, c_out, kernel, stride, padding, bias=bias)
    nn.init.normal_(layer.weight, 0.0, 0.02)
    if bias:
        nn.init.zeros_(layer.bias)
    return add_spectral_norm(layer) if sn else layer


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels)
    nn.init.normal_(norm.weight, 1.0, 0.02)
    return norm


# --- generator -------------------------------------------------------------------------------------
NoiseGenerators = list[torch.Generator] | None  # one per sample: reproducible noise when sampling


class NoiseInjection(nn.Module):
    """x + w * noise: one noise value per pixel, shared by the channels, with a learned strength w (starts at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, generators: NoiseGenerators = None) -> torch.Tensor:
        b, _, h, w = x.shape
        if generators is None:
            noise = torch.randn(b, 1, h, w, device=x.device, dtype=x.dtype)
        else:
            noise = torch.stack([torch.randn(1, h, w, generator=g) for g in generators]).to(x.device, x.dtype)
        return x + self.weight * noise


class UpBlock(nn.Module):
    """2x nearest upsampling, then one (or, ``double``, two) 3x3 convolution + [noise] + batch norm + GLU."""

    def __init__(self, c_in: int, c_out: int, double: bool, noise: bool, sn: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_conv(c_in, 2 * c_out, 3, 1, 1, sn=sn, bias=False)])
        if double:
            self.convs.append(_conv(c_out, 2 * c_out, 3, 1, 1, sn=sn, bias=False))
        self.noises = nn.ModuleList([NoiseInjection() for _ in self.convs] if noise else [])
        self.norms = nn.ModuleList([_batch_norm(2 * c_out) for _ in self.convs])

    def forward(self, x: torch.Tensor, generators: NoiseGenerators = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(x)
            if self.noises:
                x = self.noises[k](x, generators)
            x = F.glu(norm(x), dim=1)
        return x


class SkipLayerExcitation(nn.Module):
    """Gates the channels of a high-resolution map with a sigmoid vector computed from a low-resolution one."""

    def __init__(self, c_low: int, c_high: int, sn: bool) -> None:
        super().__init__()
        self.gate_net = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            _conv(c_low, c_high, 4, sn=sn, bias=False),  # 4x4 -> 1x1
            nn.LeakyReLU(0.1),
            _conv(c_high, c_high, 1, sn=sn, bias=False),
            nn.Sigmoid(),
        )

    def gate(self, low: torch.Tensor) -> torch.Tensor:
        """Per-channel gates in (0, 1), [B, C_high, 1, 1]."""
        return self.gate_net(low)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


class FastGANGenerator(nn.Module):
    def __init__(self, params: FastGANParams, size: int, out_channels: int, codec: PairCodec) -> None:
        super().__init__()
        sn, width = params.spectral_norm, lambda r: _width(G_WIDTH, r, params)
        self.codec = codec
        self.resolutions = [2**k for k in range(3, int(math.log2(size)) + 1)]  # 8 .. size
        self.initial = nn.Sequential(
            _conv(params.latent_dim, 2 * width(4), 4, sn=sn, bias=False, transpose=True),  # 1x1 -> 4x4
            _batch_norm(2 * width(4)),
            nn.GLU(dim=1),
        )
        # Two-convolution blocks with noise at 8, 32, 128, 512; single-convolution ones at 16, 64, ...
        self.ups = nn.ModuleDict({
            str(r): UpBlock(width(r // 2), width(r), double=int(math.log2(r)) % 2 == 1,
                            noise=params.noise_injection and int(math.log2(r)) % 2 == 1, sn=sn)
            for r in self.resolutions
        })
        self.excite_from = {high: low for low, high in sle_pairs(size)}  # gated resolution -> gating one
        self.excitations = nn.ModuleDict({
            str(high): SkipLayerExcitation(width(low), width(high), sn) for high, low in self.excite_from.items()
        })
        self.to_output = _conv(width(size), out_channels, 3, 1, 1, sn=sn)

    def forward(self, z: torch.Tensor, noise_generators: NoiseGenerators = None) -> torch.Tensor:
        features = {4: self.initial(z.view(z.shape[0], -1, 1, 1))}
        x = features[4]
        for r in self.resolutions:
            x = self.ups[str(r)](x, noise_generators)
            if r in self.excite_from:
                x = self.excitations[str(r)](features[self.excite_from[r]], x)
            features[r] = x
        return self.codec.activate(self.to_output(x))  # [B, channels, size, size]


# --- discriminator ---------------------------------------------------------------------------------
class DownBlock(nn.Module):
    """Halves the resolution: mean of a strided 4x4 + 3x3 convolution path and an average-pool + 1x1 path."""

    def __init__(self, c_in: int, c_out: int, sn: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            _conv(c_in, c_out, 4, 2, 1, sn=sn, bias=False), _batch_norm(c_out), nn.LeakyReLU(0.2),
            _conv(c_out, c_out, 3, 1, 1, sn=sn, bias=False), _batch_norm(c_out), nn.LeakyReLU(0.2),
        )
        self.direct = nn.Sequential(
            nn.AvgPool2d(2), _conv(c_in, c_out, 1, sn=sn, bias=False), _batch_norm(c_out), nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class SimpleDecoder(nn.Module):
    """8x8 features -> (nearest upsampling, 3x3 convolution, batch norm, GLU) up to ``size`` -> tanh picture."""

    def __init__(self, c_in: int, out_channels: int, size: int, params: FastGANParams) -> None:
        super().__init__()
        sn, layers, c = params.spectral_norm, [], c_in
        for r in _halvings(size, 8)[::-1]:  # 16, 32, ..., size
            c_next = _width(DECODER_WIDTH, r, params)
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), _conv(c, 2 * c_next, 3, 1, 1, sn=sn, bias=False),
                       _batch_norm(2 * c_next), nn.GLU(dim=1)]
            c = c_next
        layers += [_conv(c, out_channels, 3, 1, 1, sn=sn), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FastGANDiscriminator(nn.Module):
    def __init__(self, params: FastGANParams, size: int, in_channels: int) -> None:
        super().__init__()
        sn, width = params.spectral_norm, lambda r: _width(D_WIDTH, r, params)
        self.size = size
        self.stem = self._stem(in_channels, size, width, sn)
        working = min(size, D_WORKING_SIZE)
        self.downs = nn.ModuleList([DownBlock(width(r), width(r // 2), sn) for r in _halvings(working, 8)])
        self.logits = nn.Sequential(
            _conv(width(8), width(4), 1, sn=sn, bias=False), _batch_norm(width(4)), nn.LeakyReLU(0.2),
            _conv(width(4), 1, 4, sn=sn),  # 8x8 -> 5x5 map of logits
        )
        self.whole_size = min(size, RECONSTRUCTION_SIZE)
        self.part_size = min(size // 2, RECONSTRUCTION_SIZE)
        self.decode_whole = SimpleDecoder(width(8), in_channels, self.whole_size, params)
        self.decode_part = SimpleDecoder(width(16), in_channels, self.part_size, params)

    @staticmethod
    def _stem(in_channels: int, size: int, width, sn: bool) -> nn.Sequential:
        if size <= D_WORKING_SIZE:
            return nn.Sequential(_conv(in_channels, width(size), 3, 1, 1, sn=sn), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        c = in_channels
        for k, r in enumerate(_halvings(size, D_WORKING_SIZE)):
            layers.append(_conv(c, width(r // 2), 4, 2, 1, sn=sn, bias=k == 0))
            if k:
                layers.append(_batch_norm(width(r // 2)))
            layers.append(nn.LeakyReLU(0.2))
            c = width(r // 2)
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, quarter: int | None = None):
        """Logits [B, 25]; with ``quarter`` (0-3: top-left, top-right, bottom-left, bottom-right) also the
        reconstructions of the whole input [B, C, whole_size²] and of that quarter [B, C, part_size²]."""
        x = self.stem(x)
        features = {}
        for block in self.downs:
            x = block(x)
            features[x.shape[-1]] = x
        logits = self.logits(x).flatten(1)
        if quarter is None:
            return logits
        row, col = divmod(quarter, 2)
        part = features[16][:, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8]
        return logits, self.decode_whole(features[8]), self.decode_part(part)


def _halvings(start: int, stop: int) -> list[int]:
    """Resolutions start, start/2, ... down to (excluding) stop."""
    return [2**k for k in range(int(math.log2(start)), int(math.log2(stop)), -1)]


def reconstruction_targets(real: torch.Tensor, quarter: int, whole_size: int, part_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (augmented) real batch downsampled to the decoders' sizes: whole, and its ``quarter``."""
    half = real.shape[-1] // 2
    row, col = divmod(quarter, 2)
    part = real[:, :, row * half : (row + 1) * half, col * half : (col + 1) * half]
    return _resize(real, whole_size), _resize(part, part_size)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


# --- model -----------------------------------------------------------------------------------------
class FastGAN(GenerativeModel):
    """FastGAN on image/mask pairs: hinge loss, self-supervised discriminator, DiffAugment."""

    capabilities = Capabilities(outputs="pairs")

    def __init__(self, params: FastGANParams, data: DataInfo) -> None:
        super().__init__()
        size = check_data(params, data)
        self.params = params
        self.latent_dim = params.latent_dim
        self.codec = PairCodec(params.pairing, data.image_channels, data.num_labels)
        channels = self.codec.channels
        self.nets = nn.ModuleDict({
            "G": FastGANGenerator(params, size, channels, self.codec),
            "D": FastGANDiscriminator(params, size, channels),
        })
        self.init_ema()

    def phases(self) -> list[Phase]:
        return [Phase("D", "D"), Phase("G", "G")]

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if not self.params.augment:
            return x
        return diff_augment(x, self.codec.image_channels, policy=self.params.augment)

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        noise = torch.randn(real.shape[0], self.latent_dim, device=real.device)
        if phase == "D":
            with torch.no_grad():
                fake = self.nets["G"](noise).to(real.dtype)
            return self._discriminator_step(real, fake)
        if phase == "G":
            fake = self.training_nets["G"](noise)
            critic = self.nets["D"]  # unwrapped: only G's gradients are wanted here
            critic.requires_grad_(False)
            loss = -critic(self.augment(fake)).float().mean()
            critic.requires_grad_(True)
            loss.backward()
            return {"loss/G": loss.detach()}
        raise ValueError(f"unknown phase {phase!r}")

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        # Real and fake go through D in separate passes: with batch norm, a mixed batch would let D
        # tell them apart by batch statistics that the generator's fake-only pass never sees.
        critic = self.training_nets["D"]
        real = self.augment(real)
        quarter = int(torch.randint(4, ()).item())
        real_logits, whole, part = critic(real, quarter=quarter)
        fake_logits = critic(self.augment(fake))
        target_whole, target_part = reconstruction_targets(real, quarter, whole.shape[-1], part.shape[-1])
        recon = self._recon(whole, target_whole) + self._recon(part, target_part)
        adversarial = hinge_d_loss(real_logits, fake_logits)
        (adversarial + self.params.recon_weight * recon).backward()
        return {"loss/D": adversarial.detach(), "loss/D_recon": recon.detach(),
                "D_real": real_logits.detach().float().mean(), "D_fake": fake_logits.detach().float().mean()}

    def _recon(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.l1_loss if self.params.recon_loss == "l1" else F.mse_loss
        return loss(output.float(), target.float())

    def sampling_inputs(self, n: int, rng: torch.Generator, **options) -> dict:
        """Each sample's injected noise comes from its own seed, drawn from the sampling seed."""
        return {"noise_seeds": torch.randint(0, 2**62, (n,), generator=rng).tolist()}

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        generators = [torch.Generator().manual_seed(s) for s in inputs["noise_seeds"][part]]
        return self.codec.decode(net(z, noise_generators=generators))


@register_model("fastgan", FastGANParams)
def build_fastgan(params: FastGANParams, data: DataInfo) -> FastGAN:
    return FastGAN(params, data)
