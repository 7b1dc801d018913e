"""HA-GAN: hierarchical amortized GAN for high-resolution 3D image/mask pairs (Sun et al., IEEE JBHI 2022).

Re-implemented from the paper. Networks (``[B,C,D,H,W]``, slabs cut along D):

- ``G`` (one module, so that one EMA covers it): the common block G^A (z -> feature volume A at 1/4 of
  the resolution), G^L (A -> the whole volume at 1/4 resolution) and G^H (a slab of A -> that slab at
  full resolution).
- ``D``: D^L (whole low-resolution volume) and D^H (a full-resolution slab plus its position, given as
  a depth-coordinate channel). With ``num_classes > 0`` both also predict the class (AC-GAN).
- ``E``: E^H (a full-resolution slab -> its features) and E^G (features of the whole volume -> z),
  trained with L1 reconstruction losses through the frozen generator.

Total loss: adversarial (low + high) + lambda_h * recon^H + lambda_g * recon^G, spread over the phases
``D``, ``G`` (``g_steps`` times per step, the official code's g_iter) and ``E``.

Small-volume options (not in the paper, off or neutral at the paper's sizes): ``d_min_layers`` gives D^L a
convolution even when the low-resolution volume is already 4^3 (16^3 data), and ``minibatch_std`` lets both
discriminators see the spread of their batch (ProGAN).

No seams: at sampling G^H uses only local operations (convolutions, nearest upsampling, and batch norm
with its running statistics, or per-voxel PixelNorm with ``high_res_norm: pixel``), and every slab is
generated from its features plus a halo of ``HALO`` feature voxels on each side, then cropped. A slab
rendered this way equals the same region of a full-volume pass exactly, so the assembled volume has no
seams. Batch norm is the default: with PixelNorm the generator's output stops depending on z. Fitted
directly to 8 toy 16^3 cases with fixed latents, it reached L1 0.062 (their common mean) against
0.017 with batch norm, and in GAN training on cases at varied positions its samples kept one position.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from synthmed.errors import UserError
from synthmed.models.base import Capabilities, GenerativeModel, Phase
from synthmed.models.layers import minibatch_stddev
from synthmed.models.pairing import PairCodec, PairingConfig
from synthmed.models.registry import DataInfo, register_model
from synthmed.models import losses

SCALE = 4  # full resolution / low resolution, per axis
HALO = 2  # feature voxels of context each side of a slab: G^H's receptive radius (1 + 1/2 + 1/4 + 1/4)


class HAGANParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latent_dim: int = Field(1024, ge=1)
    feature_channels: int = Field(64, ge=4)  # channels of the common feature volume A
    g_max_channels: int = Field(512, ge=4)  # channels at G^A's coarsest level
    d_channels: int = Field(16, ge=1)  # first-layer channels of D^L / D^H, doubled per halving
    d_max_channels: int = Field(256, ge=1)
    slab_depth: int | None = Field(None, ge=4)  # full-resolution depth of a G^H slab; None: max(8, D/8)
    d_min_layers: int = Field(1, ge=0)  # at least this many conv layers in D^L / D^H (stride 1 where the input is small)
    minibatch_std: bool = False  # D^L / D^H also see the batch's feature spread (ProGAN), against mode collapse
    num_classes: int = Field(0, ge=0)  # > 0: conditional (auxiliary classifier) variant
    lambda_recon_h: float = Field(1.0, ge=0)  # lambda_1, weight of recon^H
    lambda_recon_g: float = Field(1.0, ge=0)  # lambda_2, weight of recon^G
    lambda_class: float = Field(1.0, ge=0)  # weight of the auxiliary classification losses
    high_res_norm: Literal["batch", "pixel"] = "batch"  # G^H's normalisation; both are local, so slabs assemble seam-free
    g_steps: int = Field(1, ge=1)  # generator updates per training step (the official code's g_iter)
    pairing: PairingConfig = PairingConfig()


# --- shape arithmetic -----------------------------------------------------------------------------
def low_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Low-resolution (feature) shape of a full-resolution network shape (sides divisible by SCALE)."""
    return tuple(s // SCALE for s in shape)


def common_levels(low: tuple[int, ...]) -> int | None:
    """Upsampling levels of G^A: from a smallest side of 4 up to ``low``; None if no number of levels does."""
    smallest = min(low)
    levels = int(round(math.log2(smallest))) - 2 if smallest >= 4 else -1
    if levels < 0 or 2 ** (levels + 2) != smallest or any(s % 2**levels for s in low):
        return None
    return levels


def check_volume_shape(data_shape: tuple[int, ...], net_shape: tuple[int, ...]) -> None:
    """Refuse data HA-GAN cannot generate.

    Args:
        data_shape: spatial shape of the prepared volumes.
        net_shape: spatial shape of the network tensor (the depth-stacked pair with pairing.layout zconcat).

    Raises:
        UserError: data that are not 3D, or a network shape G^A cannot reach at a quarter of its resolution.
    """
    if len(data_shape) != 3:
        raise UserError(f"model.name: 'hagan' generates 3D volumes (D, H, W) but the data have shape {list(data_shape)} "
                        f"({len(data_shape)} spatial axes); for 2D images use stylegan2, fastgan, dcgan2d or wgan2d")
    if any(s % SCALE for s in net_shape) or common_levels(low_shape(net_shape)) is None:
        stacked = "" if tuple(net_shape) == tuple(data_shape) else f" (the network tensor {list(net_shape)} of pairing.layout 'zconcat')"
        raise UserError(f"data shape {list(data_shape)}{stacked} is not supported by hagan: every side must be divisible by "
                        f"{SCALE}, the smallest a power of two >= 16 and the others divisible by it / 4 "
                        f"(e.g. 32x32x32, 128x128x64, 256x256x256); prepare the data with such a --shape")


def default_slab_depth(depth: int) -> int:
    return min(depth, max(8, (depth // 8) // SCALE * SCALE))


def down_strides(shape: tuple[int, ...], floor: int = 4) -> list[tuple[int, ...]]:
    """Per-level strides that halve every side above ``floor`` until none is (anisotropic volumes too)."""
    strides, current = [], list(shape)
    while any(s > floor for s in current):
        stride = tuple(2 if s > floor else 1 for s in current)
        current = [math.ceil(s / st) for s, st in zip(current, stride)]
        strides.append(stride)
    return strides


def strided_shape(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> tuple[int, ...]:
    out = list(shape)
    for stride in strides:
        out = [math.ceil(s / st) for s, st in zip(out, stride)]
    return tuple(out)


# --- building blocks ------------------------------------------------------------------------------
class PixelNorm(nn.Module):
    """Per-voxel normalisation over channels: local, so slabs and full volumes see the same statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def _conv(c_in: int, c_out: int, stride: int | tuple[int, ...] = 1, sn: bool = False) -> nn.Module:
    conv = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1)
    return spectral_norm(conv) if sn else conv


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.BatchNorm3d(channels) if kind == "batch" else PixelNorm()


def _up_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"), _conv(c_in, c_out), _norm(norm, c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class DownNet(nn.Module):
    """Strided convolutions down to sides <= 4, then linear heads: the shape of D^L, D^H and E^G."""

    def __init__(self, c_in: int, shape: tuple[int, ...], base: int, cap: int, heads: dict[str, int], sn: bool,
                 min_layers: int = 0, batch_std: bool = False):
        super().__init__()
        strides = down_strides(shape)
        strides = [(1,) * len(shape)] * max(0, min_layers - len(strides)) + strides
        layers: list[nn.Module] = []
        c = c_in
        for level, stride in enumerate(strides):
            c_out = min(cap, base * 2**level)
            layers += [_conv(c, c_out, stride, sn), nn.LeakyReLU(0.2, inplace=True)]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.batch_std = batch_std
        flat = c * math.prod(strided_shape(shape, strides)) + int(batch_std)
        self.heads = nn.ModuleDict({k: spectral_norm(nn.Linear(flat, n)) if sn else nn.Linear(flat, n) for k, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        h = torch.cat([h.flatten(1), minibatch_stddev(h)], dim=1) if self.batch_std else h.flatten(1)
        return {k: head(h) for k, head in self.heads.items()}


class CommonBlock(nn.Module):
    """G^A: z (and a one-hot class) -> feature volume A [B, feature_channels, *low]."""

    def __init__(self, in_dim: int, low: tuple[int, ...], feature_channels: int, cap: int):
        super().__init__()
        levels = common_levels(low)
        assert levels is not None, "HAGAN checks the shape first"
        self.start_shape = tuple(s // 2**levels for s in low)
        channels = [min(cap, feature_channels * 2 ** (levels - i)) for i in range(levels + 1)]
        self.start_channels = channels[0]
        self.project = nn.Linear(in_dim, channels[0] * math.prod(self.start_shape))
        self.start = nn.Sequential(nn.GroupNorm(min(8, channels[0]), channels[0]), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_up_block(channels[i], channels[i + 1], "group") for i in range(levels)])
        self.out = nn.Sequential(_conv(channels[-1], feature_channels), nn.ReLU(inplace=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.start_channels, *self.start_shape)
        return self.out(self.blocks(self.start(x)))


class Generator(nn.Module):
    """G^A, G^L and G^H together."""

    def __init__(self, params: HAGANParams, codec: PairCodec, shape: tuple[int, ...]):
        super().__init__()
        self.codec, self.shape, self.num_classes = codec, shape, params.num_classes
        self.low = low_shape(shape)
        c, out = params.feature_channels, codec.channels
        self.common = CommonBlock(params.latent_dim + params.num_classes, self.low, c, params.g_max_channels)
        self.low_res = nn.Sequential(_conv(c, c // 2), nn.ReLU(inplace=True), _conv(c // 2, out))
        norm = params.high_res_norm
        self.high_res = nn.Sequential(
            _conv(c, c), _norm(norm, c), nn.ReLU(inplace=True),
            _up_block(c, c // 2, norm), _up_block(c // 2, c // 4, norm), _conv(c // 4, out),
        )

    def features(self, z: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(classes, self.num_classes).to(z.dtype)], dim=1)
        return self.common(z)

    def render_low(self, a: torch.Tensor) -> torch.Tensor:
        return self.codec.activate(self.low_res(a))

    def render_slab(self, a: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """Full-resolution slab for feature depths [start, start + length) of A, with its halo."""
        lo, hi = max(0, start - HALO), min(a.shape[2], start + length + HALO)
        out = self.high_res(a[:, :, lo:hi])
        first = (start - lo) * SCALE
        return self.codec.activate(out[:, :, first : first + length * SCALE])

    def render_full(self, a: torch.Tensor) -> torch.Tensor:
        """G^H on the whole feature volume in one pass (memory permitting)."""
        return self.codec.activate(self.high_res(a))

    def assemble(self, a: torch.Tensor, slab: int) -> torch.Tensor:
        """The whole full-resolution volume, slab by slab (``slab`` feature voxels deep)."""
        depth = a.shape[2]
        return torch.cat([self.render_slab(a, s, min(slab, depth - s)) for s in range(0, depth, slab)], dim=2)

    def forward(
        self, z: torch.Tensor, classes: torch.Tensor | None = None, start: int | None = None, slab: int = 0
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The whole full-resolution volume, or with ``start`` the training pair (low-res volume, slab)."""
        a = self.features(z, classes)
        if start is None:
            return self.render_full(a)
        return self.render_low(a), self.render_slab(a, start, slab)


class Discriminators(nn.Module):
    """D^L (whole low-resolution volume) and D^H (full-resolution slab + depth-coordinate channel)."""

    def __init__(self, params: HAGANParams, channels: int, shape: tuple[int, ...], slab_depth: int):
        super().__init__()
        heads = {"score": 1, **({"classes": params.num_classes} if params.num_classes else {})}
        base, cap = params.d_channels, params.d_max_channels
        extra = {"min_layers": params.d_min_layers, "batch_std": params.minibatch_std}
        self.low = DownNet(channels, low_shape(shape), base, cap, heads, sn=True, **extra)
        self.high = DownNet(channels + 1, (slab_depth, *shape[1:]), base, cap, heads, sn=True, **extra)
        self.depth = shape[0]

    def position_channel(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Depth coordinate in [-1, 1] of every voxel of a slab starting at full-resolution depth ``start``."""
        d = torch.arange(start, start + x.shape[2], device=x.device, dtype=x.dtype)
        coord = (d + 0.5) * (2.0 / self.depth) - 1.0
        return coord.view(1, 1, -1, 1, 1).expand(x.shape[0], 1, -1, *x.shape[3:])

    def forward(self, low: torch.Tensor, slab: torch.Tensor, start: int) -> tuple[dict, dict]:
        return self.low(low), self.high(torch.cat([slab, self.position_channel(slab, start)], dim=1))


class Encoders(nn.Module):
    """E^H (full-resolution slab -> features) and E^G (whole feature volume -> z)."""

    def __init__(self, params: HAGANParams, channels: int, shape: tuple[int, ...]):
        super().__init__()
        c = params.feature_channels
        self.high = nn.Sequential(
            _conv(channels, c // 4), nn.LeakyReLU(0.2, inplace=True),
            _conv(c // 4, c // 2, 2), nn.LeakyReLU(0.2, inplace=True),
            _conv(c // 2, c, 2), nn.LeakyReLU(0.2, inplace=True),
            _conv(c, c), nn.ReLU(inplace=True),
        )
        self.common = DownNet(c, low_shape(shape), c, params.g_max_channels, {"z": params.latent_dim}, sn=False)

    def forward(self, x: torch.Tensor, window: tuple[int, int] | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """z of whole volumes; with ``window`` (full-resolution depths) the training pair
        (E^H features of that window, E^G's z from E^H features of the whole volume, not backpropagated
        into E^H). One call per phase, so that a DistributedDataParallel wrapper sees each weight once.
        """
        if window is None:
            return self.common(self.high(x))["z"]
        with torch.no_grad():
            features = self.high(x)
        return self.high(x[:, :, window[0] : window[1]]), self.common(features)["z"]


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv3d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _class_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labelled cases only (class -1 = unlabelled); 0 when none is labelled."""
    labelled = classes >= 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled].float(), classes[labelled])


class HAGAN(GenerativeModel):
    """Hierarchical amortized GAN; see the module docstring."""

    def __init__(self, params: HAGANParams, data: DataInfo):
        super().__init__()
        self.params = params
        self.latent_dim = params.latent_dim
        self.capabilities = Capabilities(num_classes=params.num_classes, encoder=True)
        self.codec = PairCodec(params.pairing, data.image_channels, data.num_labels)
        self.shape = tuple(self.codec.network_shape(tuple(data.shape)))
        check_volume_shape(tuple(data.shape), self.shape)
        self.low = low_shape(self.shape)
        depth = params.slab_depth or default_slab_depth(self.shape[0])
        if depth % SCALE or depth > self.shape[0]:
            raise UserError(f"model.params.slab_depth: {depth} must be a multiple of {SCALE} and at most the volume's "
                            f"depth {self.shape[0]}")
        self.slab = depth // SCALE  # in feature voxels
        channels = self.codec.channels
        self.nets = nn.ModuleDict({
            "G": Generator(params, self.codec, self.shape),
            "D": Discriminators(params, channels, self.shape, depth),
            "E": Encoders(params, channels, self.shape),
        })
        self.nets.apply(_init)
        self.init_ema()

    def phases(self) -> list[Phase]:
        return [Phase("D", "D"), *[Phase("G", "G")] * self.params.g_steps, Phase("E", "E")]

    # --- training -----------------------------------------------------------------------------
    def _draw(self, real: torch.Tensor, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Noise, fake classes and a random slab start (feature voxels) for one phase."""
        n = real.shape[0]
        z = torch.randn(n, self.latent_dim, device=real.device)
        fake_classes = None
        if self.capabilities.class_conditional:
            fake_classes = torch.randint(0, self.params.num_classes, (n,), device=real.device)
        start = int(torch.randint(0, self.low[0] - self.slab + 1, ()).item())
        return z, fake_classes, start

    def _real_views(self, real: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(X^L: the whole volume average-pooled to 1/4, S^H(X^H; r): the slab at ``start``)."""
        s = start * SCALE
        return F.avg_pool3d(real, SCALE), real[:, :, s : s + self.slab * SCALE]

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.capabilities.class_conditional and classes is None:
            classes = torch.full((real.shape[0],), -1, dtype=torch.long, device=real.device)
        if phase == "D":
            return self._discriminator_phase(real, classes)
        if phase == "G":
            return self._generator_phase(real)
        if phase == "E":
            return self._encoder_phase(real, classes)
        raise ValueError(f"unknown phase {phase!r}")

    def _discriminator_phase(self, real: torch.Tensor, classes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        z, fake_classes, start = self._draw(real, classes)
        with torch.no_grad():
            a = self.nets["G"].features(z, fake_classes)
            fake_low, fake_slab = self.nets["G"].render_low(a), self.nets["G"].render_slab(a, start, self.slab)
        real_low, real_slab = self._real_views(real, start)
        d = self.training_nets["D"]
        r_low, r_high = d(real_low, real_slab, start * SCALE)
        f_low, f_high = d(fake_low.to(real.dtype), fake_slab.to(real.dtype), start * SCALE)
        loss_low = losses.d_loss_nonsaturating(r_low["score"], f_low["score"])
        loss_high = losses.d_loss_nonsaturating(r_high["score"], f_high["score"])
        loss = loss_low + loss_high
        out = {"loss/D": loss.detach(), "loss/D_low": loss_low.detach(), "loss/D_high": loss_high.detach()}
        if self.capabilities.class_conditional:
            cls = sum(_class_loss(o["classes"], classes) + _class_loss(f["classes"], fake_classes)
                      for o, f in ((r_low, f_low), (r_high, f_high)))
            loss = loss + self.params.lambda_class * cls
            out["loss/D_class"] = cls.detach()
        loss.backward()
        return out

    def _generator_phase(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        z, fake_classes, start = self._draw(real, None)
        fake_low, fake_slab = self.training_nets["G"](z, fake_classes, start, self.slab)
        d = self.nets["D"]  # unwrapped: only G's gradients are wanted here
        d.requires_grad_(False)
        o_low, o_high = d(fake_low, fake_slab, start * SCALE)
        d.requires_grad_(True)
        loss = losses.g_loss_nonsaturating(o_low["score"]) + losses.g_loss_nonsaturating(o_high["score"])
        out = {"loss/G": loss.detach()}
        if self.capabilities.class_conditional:
            cls = _class_loss(o_low["classes"], fake_classes) + _class_loss(o_high["classes"], fake_classes)
            loss = loss + self.params.lambda_class * cls
            out["loss/G_class"] = cls.detach()
        loss.backward()
        return out

    def _encoder_phase(self, real: torch.Tensor, classes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        _, _, start = self._draw(real, None)
        lo, hi = max(0, start - HALO), min(self.low[0], start + self.slab + HALO)
        window_features, z = self.training_nets["E"](real, (lo * SCALE, hi * SCALE))
        gen = self.nets["G"]
        # The encoders learn to invert a fixed generator, as it renders at sampling (eval: batch norm's
        # running statistics, not those of the encoded batch).
        was_training = gen.training
        gen.requires_grad_(False).eval()
        try:
            recon_h = self._recon_high(window_features, real, start, lo)
            recon_g = self._recon_common(z, real, classes, start)
        finally:
            gen.requires_grad_(True).train(was_training)
        loss = self.params.lambda_recon_h * recon_h + self.params.lambda_recon_g * recon_g
        loss.backward()
        return {"loss/E_recon_h": recon_h.detach(), "loss/E_recon_g": recon_g.detach()}

    def _recon_high(self, window_features: torch.Tensor, real: torch.Tensor, start: int, lo: int) -> torch.Tensor:
        """recon^H: E^H encodes the real slab (with its halo, from ``lo``) and G^H must give the slab back."""
        recon = self.nets["G"].render_slab(window_features, start - lo, self.slab)
        target = real[:, :, start * SCALE : (start + self.slab) * SCALE]
        return F.l1_loss(recon.float(), target.float())

    def _recon_common(self, z: torch.Tensor, real: torch.Tensor, classes: torch.Tensor | None, start: int) -> torch.Tensor:
        """recon^G: E^G's z (from E^H's features of the whole volume) through G^L and G^H gives it back."""
        gen = self.nets["G"]
        a = gen.features(z, self._classes_for(real, classes))
        real_low, real_slab = self._real_views(real, start)
        return F.l1_loss(gen.render_low(a).float(), real_low.float()) + F.l1_loss(
            gen.render_slab(a, start, self.slab).float(), real_slab.float())

    @torch.no_grad()
    def _classes_for(self, real: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor | None:
        """The known class of each case, or D^L's prediction for unlabelled ones."""
        if not self.capabilities.class_conditional:
            return None
        predicted = self.nets["D"].low(F.avg_pool3d(real, SCALE))["classes"].argmax(dim=1)
        return predicted if classes is None else torch.where(classes >= 0, classes, predicted)

    # --- sampling and encoding ------------------------------------------------------------------
    def sampling_inputs(self, n: int, rng: torch.Generator, classes=None, **options) -> dict:
        """Each sample's class (conditional models): as given, or drawn uniformly from the sampling seed."""
        if not self.capabilities.class_conditional:
            return {"classes": None}
        if classes is None:
            return {"classes": torch.randint(0, self.params.num_classes, (n,), generator=rng)}
        classes = torch.as_tensor(classes, dtype=torch.long)
        classes = classes.expand(n) if classes.dim() == 0 else classes
        if classes.shape != (n,) or classes.min() < 0 or classes.max() >= self.params.num_classes:
            raise UserError(f"classes must be {n} indices in [0, {self.params.num_classes - 1}], got {classes.tolist()}")
        return {"classes": classes}

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of whole volumes, each assembled slab by slab from G^H."""
        classes = None if inputs["classes"] is None else inputs["classes"][part].to(z.device)
        return self.codec.decode(net.assemble(net.features(z, classes), self.slab))

    @torch.no_grad()
    def encode(self, real: torch.Tensor) -> torch.Tensor:
        """Latent codes z [B, latent_dim] of real network tensors [B, C, *S] (E^H then E^G)."""
        return self.nets["E"](real)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Network tensors of latent codes, through the generator the encoders were trained against."""
        gen = self.nets["G"]
        return gen.assemble(gen.features(z, classes), self.slab)

    @torch.no_grad()
    def reconstruct(
        self, real: torch.Tensor, classes: torch.Tensor | None = None, through: str = "z"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(code, reconstruction) of real network tensors.

        Args:
            classes: conditional models only; default: D^L's prediction.
            through: ``"z"``: E^H then E^G to the latent z, decoded by G^A, G^H (the full amortized
                inversion); ``"features"``: E^H's feature volume A, decoded by G^H only (the paper's
                high-resolution reconstruction path).
        """
        if through not in ("z", "features"):
            raise ValueError(f"through must be 'z' or 'features', got {through!r}")
        was_training = self.training
        self.eval()
        if through == "z":
            code = self.encode(real)
            recon = self.decode(code, self._classes_for(real, classes))
        else:
            code = self.nets["E"].high(real)
            recon = self.nets["G"].assemble(code, self.slab)
        self.train(was_training)
        return code, recon


@register_model("hagan", HAGANParams)
def build_hagan(params: HAGANParams, data: DataInfo) -> HAGAN:
    return HAGAN(params, data)
