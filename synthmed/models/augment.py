"""Differentiable augmentation of image/mask pairs, shown to a 2D GAN's discriminator.

Two pipelines, both applied to reals and fakes alike right before D, so gradients reach G through them:

- ADA (Karras et al. 2020, "Training generative adversarial networks with limited data"): every
  augmentation is applied per sample with probability ``p``, which adapts to D's overfitting
  heuristic r_t = E[sign(D(real))]. With p < 1 the augmented distribution still tells the original
  apart from its transforms ("non-leaking"), so G is not pushed to produce augmented-looking data.
- DiffAugment (Zhao et al. 2020, used by FastGAN): colour, translation and cutout on every sample.

The network tensor holds the image in channels ``[:image_channels]`` and the mask in the rest (one-hot
or scaled, see `pairing.py`). Geometric transforms move image and mask together (one transform per
sample); colour transforms touch the image channels only, so the mask channels stay bit-exact.
All arithmetic runs in float32 with autocast off (grid_sample and small matrix products are not worth
bf16), and the result is cast back to the input's dtype. Randomness comes from torch's global RNG,
which the trainer seeds.

Use in a model (an `AdaptiveAugment` is a submodule, so it follows the model to its device)::

    self.augment = AdaptiveAugment(params.augment, image_channels=codec.image_channels)
    real_logits = D(self.augment(real)); fake_logits = D(self.augment(fake))  # same call for both
    self.augment.observe(real_logits)                     # in the D phase only
    losses |= self.augment.stats_tensors()                # "ada_p", "ada_rt" without a GPU sync
    extra_state() -> {"augment": self.augment.state_dict()}  # p survives a resume

The augmentation is twice differentiable, so R1 can be taken w.r.t. the un-augmented reals as ADA does.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

# ADA's ranges, in its units (std of log2 scale factors in octaves, translations as fractions of size).
XINT_MAX = 0.125  # integer translation: uniform in +-12.5 % of the image size, rounded to pixels
SCALE_STD = 0.2  # isotropic scaling: 2 ** N(0, 0.2), i.e. lognormal(0, 0.2 ln 2)
ANISO_STD = 0.2  # anisotropic scaling: (2 ** N(0, 0.2), its inverse)
XFRAC_STD = 0.125  # fractional translation: N(0, 0.125) of the image size
BRIGHTNESS_STD = 0.2  # additive, in the [-1, 1] image range
CONTRAST_STD = 0.5  # 2 ** N(0, 0.5), scaling about 0 (mid grey)
SATURATION_STD = 1.0  # 2 ** N(0, 1), scaling of the chroma (RGB only)

# DiffAugment's ranges.
DIFF_TRANSLATION_RATIO = 0.125  # integer shift of up to 1/8 of the size
DIFF_CUTOUT_RATIO = 0.5  # square hole of half the size
DIFF_POLICIES = ("color", "translation", "cutout")


class AugmentConfig(BaseModel):
    """ADA settings of a 2D GAN (``model.params.augment``)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["ada", "fixed", "none"] = "ada"  # ada: p adapts; fixed: p stays at `p`; none: off (p = 0)
    p: float = Field(0.0, ge=0.0, le=1.0)  # initial (ada) or constant (fixed) probability
    target: float = Field(0.6, ge=0.0, le=1.0)  # ADA's target for r_t = E[sign(D(real))]
    speed_kimg: float = Field(500.0, gt=0.0)  # thousands of images for p to move 0 -> 1 at full speed
    interval: int = Field(4, ge=1)  # adjust p every `interval` discriminator steps
    # b: blit (x-flip, rot90, integer translation); g: general geometric (scale, rotation, anisotropic
    # scaling, fractional translation); c: colour (brightness, contrast, luma flip, hue, saturation).
    pipeline: Literal["bgc", "bg", "b", "g", "c"] = "bgc"


class AdaptiveAugment(nn.Module):
    """ADA's augmentation pipeline with its adaptive probability, for [B, C, H, W] pair tensors.

    ``p``, the last r_t and the sign accumulator are buffers (plus the step counter as extra state),
    so ``state_dict()`` saves and restores the adaptation exactly.
    """

    def __init__(self, config: AugmentConfig, image_channels: int) -> None:
        super().__init__()
        if image_channels < 1:
            raise ValueError(f"image_channels must be at least 1, got {image_channels}")
        self.config = config
        self.image_channels = image_channels
        initial_p = 0.0 if config.mode == "none" else config.p
        self.register_buffer("p_value", torch.tensor(initial_p, dtype=torch.float64))
        self.register_buffer("rt_value", torch.tensor(0.0, dtype=torch.float64))
        # [sum of signs, number of logits, number of images] since the last adjustment
        self.register_buffer("sign_stats", torch.zeros(3, dtype=torch.float64))
        self.steps_since_adjust = 0  # a Python int, so observe() never waits for the GPU

    @property
    def p(self) -> float:
        """Current augmentation probability."""
        return float(self.p_value)

    def forward(self, x: Tensor) -> Tensor:
        """Augment x [B, C, H, W] (image channels first, then mask channels); same shape and dtype."""
        if x.dim() != 4:
            raise ValueError(f"AdaptiveAugment expects [B, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] < self.image_channels:
            raise ValueError(f"x has {x.shape[1]} channels, fewer than image_channels={self.image_channels}")
        if self.config.mode == "none":
            return x
        pipeline = self.config.pipeline
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = x.float()
            p = self.p_value.to(device=x.device, dtype=torch.float32)
            if "b" in pipeline or "g" in pipeline:
                y = augment_geometric(y, p, blit="b" in pipeline, general="g" in pipeline)
            if "c" in pipeline:
                y = augment_colour(y, self.image_channels, p)
        return y.to(x.dtype)

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        """Accumulate sign(D(real)) of one D step; every `interval` calls, move p toward r_t = target.

        The step is sign(r_t - target) * images / (speed_kimg * 1000), images being the real images
        seen since the last adjustment (batch * interval), so p crosses [0, 1] in speed_kimg thousand
        images at full speed. Under torch.distributed the statistics are summed over all ranks, so
        every rank keeps the same p. A no-op unless mode is "ada".
        """
        if self.config.mode != "ada":
            return
        if real_logits.dim() < 1 or real_logits.numel() == 0:
            raise ValueError(f"observe() expects logits of shape [B, ...], got {tuple(real_logits.shape)}")
        signs = torch.sign(real_logits.detach().float())
        counts = torch.tensor([signs.numel(), real_logits.shape[0]], dtype=torch.float64)  # logits, images
        self.sign_stats[0] += signs.sum().to(self.sign_stats.device, torch.float64)
        self.sign_stats[1:] += counts.to(self.sign_stats.device)
        self.steps_since_adjust += 1
        if self.steps_since_adjust >= self.config.interval:
            self._adjust()

    def _adjust(self) -> None:
        stats = self.sign_stats.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        sign_sum, num_logits, num_images = stats.unbind()
        rt = sign_sum / num_logits
        step = torch.sign(rt - self.config.target) * num_images / (self.config.speed_kimg * 1000.0)
        self.p_value.copy_((self.p_value + step).clamp(0.0, 1.0))
        self.rt_value.copy_(rt)
        self.sign_stats.zero_()
        self.steps_since_adjust = 0

    def stats(self) -> dict[str, float]:
        """{"ada_p": current p, "ada_rt": r_t of the last adjustment} for logging (waits for the GPU)."""
        return {name: float(value) for name, value in self.stats_tensors().items()}

    def stats_tensors(self) -> dict[str, Tensor]:
        """The same as `stats`, as detached float32 scalars on the module's device: no GPU sync per step."""
        return {"ada_p": self.p_value.detach().float().clone(), "ada_rt": self.rt_value.detach().float().clone()}

    def get_extra_state(self) -> dict:
        return {"steps_since_adjust": self.steps_since_adjust}

    def set_extra_state(self, state: dict) -> None:
        self.steps_since_adjust = int(state["steps_since_adjust"])

    def extra_repr(self) -> str:
        c = self.config
        return f"mode={c.mode}, pipeline={c.pipeline}, image_channels={self.image_channels}, target={c.target}"


# ---------------------------------------------------------------------------------------------------
# Geometric part: one 3x3 matrix per sample, mapping output pixels to input pixels (centred pixel units).


def _eye(batch: int, device: torch.device) -> Tensor:
    return torch.eye(3, device=device).expand(batch, 3, 3).clone()


def _translate_matrix(tx: Tensor, ty: Tensor) -> Tensor:
    m = _eye(tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale_matrix(sx: Tensor, sy: Tensor) -> Tensor:
    m = _eye(sx.shape[0], sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate_matrix(cos: Tensor, sin: Tensor) -> Tensor:
    m = _eye(cos.shape[0], cos.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _gated(value: Tensor, identity: float, prob: Tensor) -> Tensor:
    """Per sample: ``value`` with probability ``prob``, else the identity parameter."""
    keep = torch.rand(value.shape[0], device=value.device) < prob
    if value.dim() > 1:
        keep = keep.view(-1, *[1] * (value.dim() - 1))
    return torch.where(keep, value, torch.full_like(value, identity))


def _random_rotation_inverse(batch: int, prob: Tensor, device: torch.device) -> Tensor:
    """Inverse of a rotation by an angle uniform in [-pi, pi], applied with probability ``prob``."""
    theta = _gated((torch.rand(batch, device=device) * 2 - 1) * math.pi, 0.0, prob)
    return _rotate_matrix(torch.cos(theta), -torch.sin(theta))


def sample_geometric_inverse(
    batch: int, height: int, width: int, p: Tensor, blit: bool = True, general: bool = True,
    device: torch.device | str = "cpu",
) -> Tensor:
    """ADA's geometric transforms as inverse matrices [B, 3, 3] in centred pixel coordinates.

    Applied in ADA's order: x-flip, rot90, integer translation (blit); isotropic scaling, pre-rotation,
    anisotropic scaling, post-rotation, fractional translation (general). Each with probability p per
    sample, except the two rotations, each with 1 - sqrt(1 - p) so that "any rotation" has p. The
    inverses are multiplied left to right in application order (output pixel -> input pixel).
    """
    device = torch.device(device)
    g_inv = _eye(batch, device)
    size = torch.tensor([width, height], dtype=torch.float32, device=device)
    if blit:
        flip = _gated(torch.randint(0, 2, (batch,), device=device).float(), 0.0, p)
        g_inv = g_inv @ _scale_matrix(1.0 - 2.0 * flip, torch.ones_like(flip))
        quarter_turns = _gated(torch.randint(0, 4, (batch,), device=device), 0, p)
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[quarter_turns]  # exact, no cos(pi/2) ~ 6e-17
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[quarter_turns]
        g_inv = g_inv @ _rotate_matrix(cos, -sin)
        shift = _gated((torch.rand(batch, 2, device=device) * 2 - 1) * XINT_MAX, 0.0, p)
        shift = torch.round(shift * size)
        g_inv = g_inv @ _translate_matrix(-shift[:, 0], -shift[:, 1])
    if general:
        scale = _gated(torch.exp2(torch.randn(batch, device=device) * SCALE_STD), 1.0, p)
        g_inv = g_inv @ _scale_matrix(1.0 / scale, 1.0 / scale)
        p_rot = 1.0 - torch.sqrt((1.0 - p).clamp(min=0.0))
        g_inv = g_inv @ _random_rotation_inverse(batch, p_rot, device)
        aniso = _gated(torch.exp2(torch.randn(batch, device=device) * ANISO_STD), 1.0, p)
        g_inv = g_inv @ _scale_matrix(1.0 / aniso, aniso)
        g_inv = g_inv @ _random_rotation_inverse(batch, p_rot, device)
        shift = _gated(torch.randn(batch, 2, device=device) * XFRAC_STD, 0.0, p) * size
        g_inv = g_inv @ _translate_matrix(-shift[:, 0], -shift[:, 1])
    return g_inv


def warp(x: Tensor, g_inv: Tensor) -> Tensor:
    """Resample x [B, C, H, W] with inverse pixel-space matrices g_inv [B, 3, 3]; identical on all channels.

    Every channel, image and mask alike, gets the same bilinear sampling and the same reflection padding
    (ADA pads the image by reflection). Keeping the mask channels on exactly the same warp is what keeps
    a pair consistent, border included: the reflected image content carries its reflected labels. The
    masks also stay valid: bilinear weights are a convex combination, so one-hot channels still sum to
    1 (like the generator's softmax) and a scaled channel stays within its label range. Real and fake
    masks go through the identical resampling, so D cannot tell them apart by interpolation artefacts.
    Nearest-neighbour masks would be misaligned by up to half a pixel against the bilinear image.
    """
    batch, _, height, width = x.shape
    to_norm = torch.diag(torch.tensor([2.0 / width, 2.0 / height, 1.0], device=x.device))
    from_norm = torch.diag(torch.tensor([width / 2.0, height / 2.0, 1.0], device=x.device))
    theta = (to_norm @ g_inv.to(x.device, torch.float32) @ from_norm)[:, :2, :]
    grid = F.affine_grid(theta, [batch, x.shape[1], height, width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_geometric(x: Tensor, p: Tensor | float, blit: bool = True, general: bool = True) -> Tensor:
    """ADA's blit and/or general geometric augmentations of x [B, C, H, W], one transform per sample.

    Samples whose transform came out as the identity are returned bit-exact (not resampled).
    """
    p = torch.as_tensor(p, dtype=torch.float32, device=x.device)
    g_inv = sample_geometric_inverse(x.shape[0], x.shape[2], x.shape[3], p, blit, general, x.device)
    moved = (g_inv != torch.eye(3, device=x.device)).flatten(1).any(dim=1)
    return torch.where(moved.view(-1, 1, 1, 1), warp(x, g_inv), x)


# ---------------------------------------------------------------------------------------------------
# Colour part: one 4x4 affine colour matrix per sample, acting on RGB (reduced to a gain and an offset
# for other channel counts, as ADA does for grayscale).

_LUMA_AXIS = torch.ones(3) / math.sqrt(3.0)  # unit vector of grey in RGB
_LUMA_OUTER = torch.outer(_LUMA_AXIS, _LUMA_AXIS)  # projection onto the luma axis
_LUMA_CROSS = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3.0)  # v x .


def _eye4(batch: int, device: torch.device) -> Tensor:
    return torch.eye(4, device=device).expand(batch, 4, 4).clone()


def _about_luma(linear: Tensor) -> Tensor:
    """Embed [B, 3, 3] colour-space matrices into [B, 4, 4] homogeneous ones."""
    m = _eye4(linear.shape[0], linear.device)
    m[:, :3, :3] = linear
    return m


def sample_colour_matrix(batch: int, p: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """ADA's colour transforms as [B, 4, 4] matrices: brightness, contrast, luma flip, hue, saturation.

    Each is applied with probability p per sample, in that order, and composed by left multiplication.
    """
    device = torch.device(device)
    vvt, cross = _LUMA_OUTER.to(device), _LUMA_CROSS.to(device)  # built on the CPU: no GPU sync
    eye3 = torch.eye(3, device=device)
    c = _eye4(batch, device)

    brightness = _gated(torch.randn(batch, device=device) * BRIGHTNESS_STD, 0.0, p)
    shift = _eye4(batch, device)
    shift[:, :3, 3] = brightness[:, None]
    c = shift @ c

    contrast = _gated(torch.exp2(torch.randn(batch, device=device) * CONTRAST_STD), 1.0, p)
    c = _about_luma(contrast[:, None, None] * eye3) @ c

    # Householder reflection of the luma axis: inverts brightness and keeps the chroma.
    flip = _gated(torch.randint(0, 2, (batch,), device=device).float(), 0.0, p)
    c = _about_luma(eye3 - 2.0 * flip[:, None, None] * vvt) @ c

    # Rotation about the luma axis (Rodrigues); keeps luma, turns the hue.
    theta = _gated((torch.rand(batch, device=device) * 2 - 1) * math.pi, 0.0, p)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    c = _about_luma(cos * eye3 + sin * cross + (1 - cos) * vvt) @ c

    saturation = _gated(torch.exp2(torch.randn(batch, device=device) * SATURATION_STD), 1.0, p)
    c = _about_luma(vvt + (eye3 - vvt) * saturation[:, None, None]) @ c
    return c


def apply_colour_matrix(x: Tensor, image_channels: int, matrix: Tensor) -> Tensor:
    """Apply colour matrices [B, 4, 4] to the image channels of x; mask channels are passed through.

    RGB (3 channels) gets the full matrix. Any other channel count (grayscale, multi-modal) gets ADA's
    grayscale reduction on every channel: the gain is the mean row sum of the 3x3 part and the offset the
    mean offset, so brightness, contrast and luma flip (a negation) act, while hue and saturation, which
    keep the luma, are the identity.
    """
    image, mask = x[:, :image_channels], x[:, image_channels:]
    if image_channels == 3:
        image = torch.einsum("bij,bjhw->bihw", matrix[:, :3, :3], image) + matrix[:, :3, 3, None, None]
    else:
        gain = matrix[:, :3, :3].sum(dim=2).mean(dim=1)
        offset = matrix[:, :3, 3].mean(dim=1)
        image = image * gain.view(-1, 1, 1, 1) + offset.view(-1, 1, 1, 1)
    return torch.cat([image, mask], dim=1)


def augment_colour(x: Tensor, image_channels: int, p: Tensor | float) -> Tensor:
    """ADA's colour augmentations of the image channels of x [B, C, H, W]; mask channels bit-exact."""
    p = torch.as_tensor(p, dtype=torch.float32, device=x.device)
    matrix = sample_colour_matrix(x.shape[0], p, x.device)
    return apply_colour_matrix(x, image_channels, matrix)


# ---------------------------------------------------------------------------------------------------
# DiffAugment


def _diff_colour(x: Tensor, image_channels: int) -> Tensor:
    """DiffAugment's brightness, saturation and contrast, on the image channels only."""
    image, mask = x[:, :image_channels], x[:, image_channels:]
    batch = x.shape[0]
    image = image + (torch.rand(batch, 1, 1, 1, device=x.device) - 0.5)
    mean = image.mean(dim=1, keepdim=True)
    image = (image - mean) * (torch.rand(batch, 1, 1, 1, device=x.device) * 2) + mean
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * (torch.rand(batch, 1, 1, 1, device=x.device) + 0.5) + mean
    return torch.cat([image, mask], dim=1)


def _diff_translation(x: Tensor, image_channels: int, ratio: float = DIFF_TRANSLATION_RATIO) -> Tensor:
    """Shift every sample by a random whole number of pixels (up to ratio * size), same shift on all channels.

    The uncovered border is 0 on image channels (DiffAugment's choice: mid grey in [-1, 1]) and repeats
    the edge on mask channels: 0 is no valid mask value (a one-hot vector must sum to 1, and in the
    scaled encoding 0 is a middle label or none), while repeating the edge keeps every mask pixel valid
    and, for masks whose border is background, fills with background, consistent with the blank image.
    """
    batch, _, height, width = x.shape
    max_y, max_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (batch, 1), device=x.device)
    shift_x = torch.randint(-max_x, max_x + 1, (batch, 1), device=x.device)
    pad = (max_x, max_x, max_y, max_y)
    padded = torch.cat([F.pad(x[:, :image_channels], pad), _pad_replicate(x[:, image_channels:], pad)], dim=1)
    rows = torch.arange(height, device=x.device)[None, :] - shift_y + max_y  # [B, H]
    cols = torch.arange(width, device=x.device)[None, :] - shift_x + max_x  # [B, W]
    channels_last = padded.permute(0, 2, 3, 1)  # [B, H', W', C]
    picked = channels_last[torch.arange(batch, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)


def _pad_replicate(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0], 0, x.shape[2] + pad[2] + pad[3], x.shape[3] + pad[0] + pad[1])
    return F.pad(x, pad, mode="replicate")


def _diff_cutout(x: Tensor, ratio: float = DIFF_CUTOUT_RATIO) -> Tensor:
    """Zero a random square (ratio * size) per sample, the same square on every channel.

    The hole is 0 on mask channels too: it marks "no data" for image and mask alike, on reals and fakes
    identically, so D sees an occluder and no mismatch between an erased image and an intact mask.
    """
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    centre_y = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=x.device)
    centre_x = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=x.device)
    rows = torch.arange(height, device=x.device)[None, :, None]
    cols = torch.arange(width, device=x.device)[None, None, :]
    offset_y = rows - centre_y + size_y // 2  # position inside the hole, per row
    offset_x = cols - centre_x + size_x // 2
    inside = (offset_y >= 0) & (offset_y < size_y) & (offset_x >= 0) & (offset_x < size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: Tensor, image_channels: int, policy: str = "color,translation,cutout") -> Tensor:
    """DiffAugment (Zhao et al. 2020) of x [B, C, H, W]; every sample is augmented.

    Args:
        x: pair tensor, image channels first, then mask channels.
        image_channels: how many leading channels are the image.
        policy: comma-separated subset of "color", "translation", "cutout", applied in that order.
            Colour touches the image channels only; translation and cutout act identically on all.

    Raises:
        ValueError: an unknown policy name or a tensor that is not [B, C, H, W].
    """
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in DIFF_POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; available: {', '.join(DIFF_POLICIES)}")
    if x.dim() != 4 or x.shape[1] < image_channels:
        raise ValueError(f"diff_augment expects [B, C>={image_channels}, H, W], got {tuple(x.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        y = x.float()
        if "color" in names:
            y = _diff_colour(y, image_channels)
        if "translation" in names:
            y = _diff_translation(y, image_channels)
        if "cutout" in names:
            y = _diff_cutout(y)
    return y.to(x.dtype)
