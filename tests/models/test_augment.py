import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from synthmed.models.augment import (
    AdaptiveAugment,
    AugmentConfig,
    apply_colour_matrix,
    augment_geometric,
    diff_augment,
    sample_colour_matrix,
    sample_geometric_inverse,
    warp,
)

SIZE = 32
PIPELINES = ["bgc", "bg", "b", "g", "c"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def disc_pairs(batch: int, image_channels: int = 1, encoding: str = "onehot", size: int = SIZE) -> torch.Tensor:
    """Pairs whose image is bright (+1) exactly where the mask is foreground: an off-centre disc per sample."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centres = torch.rand(batch, 2) * (size / 2) + size / 4
    radii = torch.rand(batch) * 3 + 5
    inside = (xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2 < radii[:, None, None] ** 2
    image = (inside.float() * 2 - 1).unsqueeze(1).repeat(1, image_channels, 1, 1)
    if encoding == "onehot":
        mask = F.one_hot(inside.long(), 2).movedim(-1, 1).float()
    else:  # scaled: background -1, foreground +1
        mask = inside.float().unsqueeze(1) * 2 - 1
    return torch.cat([image, mask], dim=1)


def foreground(x: torch.Tensor, image_channels: int, encoding: str) -> torch.Tensor:
    """The mask's foreground probability in [0, 1] from the augmented mask channels."""
    mask = x[:, image_channels:]
    return mask[:, 1] if encoding == "onehot" else (mask[:, 0] + 1) / 2


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum()).item()


def asymmetric_image() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    disc = ((xx - 10) ** 2 + (yy - 12) ** 2 < 36).float() * 2 - 1
    return (disc + xx / SIZE).view(1, 1, SIZE, SIZE)


def ada(p: float, pipeline: str = "bgc", image_channels: int = 1, **kwargs) -> AdaptiveAugment:
    return AdaptiveAugment(AugmentConfig(p=p, pipeline=pipeline, **kwargs), image_channels)


# ---- ADA: identity, change, shapes and dtypes


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_p_zero_is_exactly_the_identity(pipeline):
    x = disc_pairs(8, image_channels=3)
    assert torch.equal(ada(0.0, pipeline, image_channels=3)(x), x)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_p_one_changes_every_sample(pipeline):
    x = disc_pairs(16, image_channels=3) + 0.1 * torch.randn(16, 5, SIZE, SIZE)  # no symmetric sample
    y = ada(1.0, pipeline, image_channels=3)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    changed = (y - x).abs().flatten(1).amax(dim=1) > 1e-3
    assert changed.all()


def test_mode_none_is_the_identity_and_reports_p_zero():
    augment = AdaptiveAugment(AugmentConfig(mode="none", p=0.7), 1)
    x = disc_pairs(4)
    assert torch.equal(augment(x), x) and augment.p == 0.0


def test_bf16_autocast_keeps_dtype_and_shape():
    x = disc_pairs(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = ada(1.0)(x.bfloat16())
        out_f32 = ada(1.0)(x)
        diff_bf16 = diff_augment(x.bfloat16(), 1)
    assert out_bf16.dtype == diff_bf16.dtype == torch.bfloat16 and out_f32.dtype == torch.float32
    assert torch.isfinite(out_bf16.float()).all() and out_bf16.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_autocast_with_gradients():
    augment = ada(0.8, image_channels=3).cuda()
    x = disc_pairs(8, image_channels=3).cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = augment(x.bfloat16()) + diff_augment(x.bfloat16(), 3)
    y.float().square().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad.abs().sum() > 0
    augment.observe(torch.ones(8, device="cuda"))
    assert augment.p_value.device.type == "cuda"


def test_bad_input_is_refused():
    with pytest.raises(ValidationError):
        AugmentConfig(p=1.5)
    with pytest.raises(ValidationError):
        AugmentConfig(pipeline="bgcfn")
    with pytest.raises(ValidationError):
        AugmentConfig(speed=3)  # extra keys are forbidden
    with pytest.raises(ValueError, match="channels"):
        ada(0.5, image_channels=3)(torch.zeros(2, 2, SIZE, SIZE))
    with pytest.raises(ValueError, match="B, C, H, W"):
        ada(0.5)(torch.zeros(2, 2, 4, SIZE, SIZE))


# ---- ADA: the adaptive probability


def test_p_rises_when_d_is_overconfident_with_the_formula_step():
    config = AugmentConfig(p=0.0, speed_kimg=0.1, interval=4)  # full speed: 100 images for 0 -> 1
    augment = AdaptiveAugment(config, 1)
    step = 8 * 4 / 100  # batch * interval / (speed_kimg * 1000)
    for adjustment in range(1, 4):
        for call in range(4):
            assert augment.p == pytest.approx((adjustment - 1) * step)  # only every `interval` calls
            augment.observe(torch.full((8,), 3.0))
        assert augment.p == pytest.approx(adjustment * step)
    for _ in range(8):
        augment.observe(torch.full((8,), 3.0))
    assert augment.p == 1.0  # clamped
    assert augment.stats() == {"ada_p": 1.0, "ada_rt": 1.0}


def test_p_falls_when_rt_is_below_target_and_stays_non_negative():
    augment = AdaptiveAugment(AugmentConfig(p=0.5, speed_kimg=0.1, interval=2, target=0.6), 1)
    logits = torch.tensor([1.0, 2.0, -1.0, -3.0, 0.5, -0.5, 4.0, -4.0])  # r_t = 0 < 0.6
    augment.observe(logits)
    augment.observe(logits)
    assert augment.p == pytest.approx(0.5 - 8 * 2 / 100)
    assert augment.stats()["ada_rt"] == 0.0
    for _ in range(20):
        augment.observe(logits)
    assert augment.p == 0.0


def test_rt_counts_every_logit_but_the_step_counts_images():
    augment = AdaptiveAugment(AugmentConfig(p=0.5, speed_kimg=0.1, interval=1, target=0.6), 1)
    patch_logits = torch.ones(4, 1, 5, 5)  # a patch discriminator: 25 logits per image
    patch_logits[:, :, :2] = -1.0  # 10 of 25 negative: r_t = 0.2
    augment.observe(patch_logits)
    assert augment.stats()["ada_rt"] == pytest.approx(0.2)
    assert augment.p == pytest.approx(0.5 - 4 / 100)


@pytest.mark.parametrize("mode", ["fixed", "none"])
def test_p_never_moves_outside_ada_mode(mode):
    augment = AdaptiveAugment(AugmentConfig(mode=mode, p=0.3 if mode == "fixed" else 0.0, speed_kimg=0.01), 1)
    for _ in range(20):
        augment.observe(torch.ones(16))
    assert augment.p == (0.3 if mode == "fixed" else 0.0)


def test_state_dict_round_trips_p_and_the_pending_interval():
    config = AugmentConfig(p=0.1, speed_kimg=0.1, interval=3)
    first = AdaptiveAugment(config, 1)
    for _ in range(5):  # one adjustment, then 2 of the next 3 steps accumulated
        first.observe(torch.ones(8))
    second = AdaptiveAugment(config, 1)
    second.load_state_dict(first.state_dict())
    assert second.p == first.p == pytest.approx(0.1 + 0.24)
    first.observe(torch.ones(8))
    second.observe(torch.ones(8))
    assert second.p == first.p == pytest.approx(0.1 + 0.48)


# ---- ADA: what each augmentation does


def test_warp_reproduces_flips_rotations_and_integer_shifts_exactly():
    x = torch.randn(1, 3, SIZE, SIZE)
    eye = torch.eye(3)[None]
    flip = eye.clone()
    flip[0, 0, 0] = -1
    assert torch.allclose(warp(x, flip), x.flip(-1), atol=1e-5)
    rot180 = eye.clone()
    rot180[0, 0, 0] = rot180[0, 1, 1] = -1
    assert torch.allclose(warp(x, rot180), x.flip(-1, -2), atol=1e-5)
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    assert torch.allclose(warp(x, quarter), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    shift = eye.clone()
    shift[0, 0, 2], shift[0, 1, 2] = -3, 2  # output (i, j) reads input (i + 2, j - 3)
    assert torch.allclose(warp(x, shift)[..., :-2, 3:], x[..., 2:, :-3], atol=1e-5)


def test_warp_of_a_non_square_image_flips_about_its_centre():
    x = torch.randn(2, 2, 24, 40)
    rot180 = torch.diag(torch.tensor([-1.0, -1.0, 1.0])).expand(2, 3, 3)
    assert torch.allclose(warp(x, rot180), x.flip(-1, -2), atol=1e-5)


def test_blit_identity_probability_matches_ada():
    # identity needs: no flip (1 - p/2), no quarter turn (1 - 3p/4), and no translation or one that
    # rounds to 0 on both axes (uniform +-4 px at 32 px: 1/8 per axis).
    p = 0.5
    g_inv = sample_geometric_inverse(20000, SIZE, SIZE, torch.tensor(p), blit=True, general=False)
    identity = (g_inv == torch.eye(3)).flatten(1).all(dim=1).float().mean().item()
    expected = (1 - p / 2) * (1 - 3 * p / 4) * (1 - p + p / 64)
    assert identity == pytest.approx(expected, abs=0.015)


def test_any_rotation_happens_with_probability_p():
    # Scalings are diagonal, so the 2x2 part is non-symmetric exactly when a rotation was drawn.
    p = 0.4
    g_inv = sample_geometric_inverse(20000, SIZE, SIZE, torch.tensor(p), blit=False, general=True)
    linear = g_inv[:, :2, :2]
    rotated = (linear - linear.transpose(1, 2)).abs().amax(dim=(1, 2)) > 1e-6
    assert rotated.float().mean().item() == pytest.approx(p, abs=0.015)


def test_isotropic_scale_is_lognormal_with_0_2_octaves():
    g_inv = sample_geometric_inverse(20000, SIZE, SIZE, torch.tensor(1.0), blit=False, general=True)
    # With p = 1 the linear part is R2 A R1 / s, so |det| = 1 / s^2 (rotations and aniso keep area).
    log2_scale = -0.5 * torch.log2(torch.det(g_inv[:, :2, :2]).abs())
    assert log2_scale.mean().item() == pytest.approx(0.0, abs=0.01)
    assert log2_scale.std().item() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("pipeline", ["b", "g", "bg"])
@pytest.mark.parametrize("encoding", ["onehot", "scaled"])
def test_geometric_augmentation_keeps_image_and_mask_aligned(pipeline, encoding):
    x = disc_pairs(32, encoding=encoding)
    y = ada(1.0, pipeline)(x)
    fg = foreground(y, 1, encoding)
    image = y[:, 0]
    assert iou(image > 0, fg > 0.5) > 0.99  # the same warp on every channel: aligned to rounding
    per_sample_inside = (image * fg).sum(dim=(1, 2)) / fg.sum(dim=(1, 2))
    per_sample_outside = (image * (1 - fg)).sum(dim=(1, 2)) / (1 - fg).sum(dim=(1, 2))
    assert (per_sample_inside > 0.5).all() and (per_sample_outside < -0.5).all()


def test_geometric_augmentation_keeps_masks_valid():
    onehot = ada(1.0, "bg")(disc_pairs(16, encoding="onehot"))[:, 1:]
    assert torch.allclose(onehot.sum(dim=1), torch.ones(1), atol=1e-5)
    assert onehot.min() >= -1e-6 and onehot.max() <= 1 + 1e-6
    scaled = ada(1.0, "bg")(disc_pairs(16, encoding="scaled"))[:, 1:]
    assert scaled.min() >= -1 - 1e-6 and scaled.max() <= 1 + 1e-6


@pytest.mark.parametrize("image_channels", [1, 3])
def test_colour_never_touches_mask_channels(image_channels):
    x = disc_pairs(16, image_channels=image_channels)
    torch.manual_seed(5)
    colour_only = ada(1.0, "c", image_channels)(x)
    assert torch.equal(colour_only[:, image_channels:], x[:, image_channels:])
    assert not torch.allclose(colour_only[:, :image_channels], x[:, :image_channels])
    # the full pipeline draws the same geometric transforms first, so its masks equal those of "bg"
    torch.manual_seed(6)
    full = ada(1.0, "bgc", image_channels)(x)
    torch.manual_seed(6)
    geometric = ada(1.0, "bg", image_channels)(x)
    assert torch.equal(full[:, image_channels:], geometric[:, image_channels:])
    assert not torch.allclose(full[:, :image_channels], geometric[:, :image_channels])


def test_grayscale_colour_is_the_luma_of_rgb_colour():
    # Every ADA colour op keeps the luma axis and its orthogonal complement apart, so the luma of an
    # augmented RGB image is the grayscale augmentation of its luma (ADA's grayscale reduction).
    matrix = sample_colour_matrix(64, torch.tensor(1.0))
    rgb = torch.rand(64, 3, 4, 4) * 2 - 1
    augmented_luma = apply_colour_matrix(rgb, 3, matrix).mean(dim=1, keepdim=True)
    assert torch.allclose(augmented_luma, apply_colour_matrix(rgb.mean(dim=1, keepdim=True), 1, matrix), atol=1e-5)


def test_rgb_hue_and_saturation_keep_luma_and_luma_flip_negates_it():
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    luma = x.mean(dim=1)
    hue = sample_colour_matrix(1, torch.tensor(0.0))  # start from identity, then build one op by hand
    theta = torch.tensor(1.0)
    v = torch.ones(3) / math.sqrt(3)
    cross = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    cos, sin = torch.cos(theta), torch.sin(theta)
    hue[0, :3, :3] = cos * torch.eye(3) + sin * cross + (1 - cos) * torch.outer(v, v)
    turned = apply_colour_matrix(x, 3, hue)
    assert torch.allclose(turned.mean(dim=1), luma, atol=1e-5) and not torch.allclose(turned, x)
    flip = torch.eye(4)[None].clone()
    flip[0, :3, :3] = torch.eye(3) - 2 * torch.outer(v, v)
    assert torch.allclose(apply_colour_matrix(x, 3, flip).mean(dim=1), -luma, atol=1e-5)


def test_gradients_flow_to_the_generator_through_d():
    generator = torch.nn.Conv2d(4, 4, 3, padding=1)
    critic = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, stride=2), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    x = torch.randn(4, 4, SIZE, SIZE)
    for augment in (ada(0.7, "bgc", image_channels=3), lambda t: diff_augment(t, 3)):
        generator.zero_grad()
        critic(augment(generator(x))).mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())


def test_r1_through_the_augmentation_reaches_d():
    # ADA takes R1 at the un-augmented reals: a double backward through grid_sample and the colour ops.
    critic = torch.nn.Sequential(torch.nn.Conv2d(5, 8, 3, stride=2), torch.nn.Softplus(), torch.nn.Flatten(),
                                 torch.nn.Linear(8 * 15 * 15, 1))
    real = disc_pairs(4, image_channels=3).requires_grad_(True)
    logits = critic(ada(0.8, "bgc", image_channels=3)(real))
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    grad.square().sum().backward()
    weights = (critic[0].weight, critic[0].bias, critic[3].weight)  # the last bias cannot change grad_x D
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


def test_stats_tensors_match_stats():
    augment = ada(0.25, speed_kimg=0.1, interval=1)
    augment.observe(torch.tensor([1.0, -1.0, 1.0, 1.0]))
    tensors = augment.stats_tensors()
    assert {k: v.item() for k, v in tensors.items()} == pytest.approx(augment.stats())
    assert augment.stats() == pytest.approx({"ada_p": 0.25 - 4 / 100, "ada_rt": 0.5})


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_gradient_reaches_image_and_mask_channels(pipeline):
    x = disc_pairs(4).requires_grad_(True)
    (ada(1.0, pipeline)(x) * torch.randn(4, 3, SIZE, SIZE)).sum().backward()
    assert x.grad[:, 0].abs().sum() > 0 and x.grad[:, 1:].abs().sum() > 0


def test_augment_geometric_gradient_is_the_adjoint_of_the_warp():
    # The warp is linear in x: <A x, v> must equal <x, A^T v> computed by autograd.
    x = torch.randn(3, 2, SIZE, SIZE, requires_grad=True)
    v = torch.randn(3, 2, SIZE, SIZE)
    torch.manual_seed(3)
    y = augment_geometric(x, 1.0)
    (y * v).sum().backward()
    torch.manual_seed(3)
    y_again = augment_geometric(x.detach(), 1.0)
    assert torch.allclose(y, y_again)
    assert torch.allclose((y_again * v).sum(), (x.detach() * x.grad).sum(), rtol=1e-4)


# ---- ADA: non-leaking


def test_blit_keeps_the_original_the_most_likely_outcome_below_p_one():
    x = asymmetric_image().expand(4000, 1, SIZE, SIZE)

    def exact_fraction(y, target):
        return ((y - target).abs().flatten(1).amax(dim=1) < 1e-4).float().mean().item()

    y = ada(0.5, "b")(x)
    original, flipped = exact_fraction(y, x), exact_fraction(y, x.flip(-1))
    assert original > 2 * flipped > 0  # ~0.24 against ~0.08: D can still tell the orientation of reals
    y = ada(1.0, "b")(x)
    assert exact_fraction(y, x) == pytest.approx(exact_fraction(y, x.flip(-1)), abs=0.01)  # p = 1 leaks


def test_mean_of_augmented_copies_is_not_its_own_flip_below_p_one():
    x = asymmetric_image()
    asymmetry = (x - x.flip(-1)).norm()

    def mean_asymmetry(p, pipeline):
        mean = ada(p, pipeline)(x.expand(4096, 1, SIZE, SIZE)).mean(dim=0)
        return ((mean - mean.flip(-1)).norm() / asymmetry).item()

    assert mean_asymmetry(0.2, "b") > 0.4
    assert mean_asymmetry(0.2, "bgc") > 0.2
    assert mean_asymmetry(1.0, "b") < 0.1  # the check can fail: at p = 1 flips make the mean symmetric


# ---- DiffAugment


@pytest.mark.parametrize("encoding", ["onehot", "scaled"])
def test_diff_augment_translation_and_cutout_keep_pairs_aligned(encoding):
    x = disc_pairs(32, encoding=encoding)
    y = diff_augment(x, 1, "translation,cutout")
    assert not torch.equal(y, x)
    image, fg = y[:, 0], foreground(y, 1, encoding)
    visible = fg > 0.5
    assert visible.any() and iou(image > 0.5, visible) == 1.0  # whole-pixel shifts: exactly aligned


def test_diff_augment_translation_keeps_masks_valid():
    y = diff_augment(disc_pairs(16, encoding="onehot"), 1, "translation")
    assert torch.equal(y[:, 1:].sum(dim=1), torch.ones(16, SIZE, SIZE))
    blank = y[:, 0] == 0  # uncovered border of the image
    assert blank.any() and (y[:, 2][blank] == 0).all()  # no foreground there (disc masks have background borders)


def test_diff_augment_cutout_erases_the_same_square_on_every_channel():
    x = disc_pairs(8, image_channels=3) * 0.5 + 2  # no zeros before the cutout
    y = diff_augment(x, 3, "cutout")
    holes = y == 0
    assert torch.equal(holes, holes[:, :1].expand_as(holes))
    assert holes[:, 0].flatten(1).sum(dim=1).eq(16 * 16).any()  # a full 16 x 16 hole when not at the edge


@pytest.mark.parametrize("image_channels", [1, 3])
def test_diff_augment_colour_touches_only_the_image(image_channels):
    x = disc_pairs(8, image_channels=image_channels)
    y = diff_augment(x, image_channels, "color")
    assert torch.equal(y[:, image_channels:], x[:, image_channels:])
    assert not torch.allclose(y[:, :image_channels], x[:, :image_channels])
    image, fg = y[:, 0], x[:, -1]
    inside = (image * fg).sum(dim=(1, 2)) / fg.sum(dim=(1, 2))
    outside = (image * (1 - fg)).sum(dim=(1, 2)) / (1 - fg).sum(dim=(1, 2))
    assert (inside > outside + 0.5).all()  # contrast >= 0.5 keeps the +1 / -1 disc apart by >= 1


def test_diff_augment_full_policy_keeps_the_disc_brighter_inside_the_mask():
    y = diff_augment(disc_pairs(32), 1)
    image, fg = y[:, 0], y[:, 2]
    inside = (image * fg).sum(dim=(1, 2)) / fg.sum(dim=(1, 2)).clamp(min=1)
    outside = (image * (1 - fg) * (y[:, 1] > 0.5)).sum(dim=(1, 2)) / (y[:, 1] > 0.5).sum(dim=(1, 2))
    has_disc = fg.sum(dim=(1, 2)) > 0
    assert (inside[has_disc] > outside[has_disc] + 0.5).all()


def test_diff_augment_refuses_unknown_policies():
    with pytest.raises(ValueError, match="colour"):
        diff_augment(disc_pairs(2), 1, "colour,translation")
