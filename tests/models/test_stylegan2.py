"""StyleGAN2-ADA and its mask variants (B-SG, M-SG, C-SG): layers, networks, losses, sampling, learning.

Tiny networks (32x32, 8-32 channels) on synthetic tensors; end-to-end runs through the trainer are in
``test_stylegan2_training.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthmed.data.toy2d import toy_disc, toy_image_2d
from synthmed.errors import UserError
from synthmed.models.registry import DataInfo, build_model
from synthmed.models.layers import MinibatchStdDev
from synthmed.models.stylegan2.layers import modulated_conv2d
from synthmed.models.stylegan2.model import StyleGAN2, StyleGAN2Params, auto_r1_gamma
from synthmed.models.stylegan2.networks import channels_at

VARIANTS = ["B-SG", "M-SG", "C-SG"]
TINY = dict(z_dim=16, w_dim=16, channel_base=256, channel_max=16)  # 16 channels up to 16x16, 8 at 32x32


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(variant: str = "B-SG", image_channels: int = 1, num_labels: int = 2, size: int = 32, **params):
    torch.manual_seed(0)
    return StyleGAN2(StyleGAN2Params(variant=variant, **{**TINY, **params}),
                     DataInfo((size, size), image_channels, num_labels))


def disc_pairs(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy pairs of the 2D toy dataset: a bright disc on a dark noisy background, mask = the disc."""
    rng = np.random.default_rng(seed)
    discs = [toy_disc((size, size), rng) for _ in range(n)]
    pixels = np.stack([toy_image_2d(d, rng, rgb=False, bits=8) for d in discs])
    images = torch.from_numpy(pixels).float().div(255).mul(2).sub(1).unsqueeze(1)
    return images, torch.from_numpy(np.stack(discs)).long()


def random_batch(model: StyleGAN2, n: int = 4, image_channels: int = 1, num_labels: int = 2) -> torch.Tensor:
    images = torch.rand(n, image_channels, 32, 32) * 2 - 1
    return model.codec.encode(images, torch.randint(0, num_labels, (n, 32, 32)))


# --- layers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False])
def test_modulated_demodulated_conv_keeps_unit_variance(fused):
    torch.manual_seed(1)
    x = torch.randn(8, 64, 32, 32)
    weight = torch.randn(48, 64, 3, 3) * 5.0  # any scale: demodulation removes it
    styles = torch.rand(8, 64) * 3 + 0.1  # random positive per-sample styles of very different sizes
    out = modulated_conv2d(x, weight, styles, demodulate=True, fused=fused)
    assert out.shape == (8, 48, 32, 32)
    assert out[..., 1:-1, 1:-1].std().item() == pytest.approx(1.0, rel=0.1)  # away from the zero padding
    undemodulated = modulated_conv2d(x, weight, styles, demodulate=False, fused=fused)
    assert undemodulated.std().item() > 10  # without demodulation the styles scale the output


def test_fused_and_unfused_modulated_conv_agree():
    torch.manual_seed(2)
    x, weight, styles = torch.randn(3, 5, 8, 8), torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    for demodulate in (True, False):
        fused = modulated_conv2d(x, weight, styles, demodulate, fused=True)
        unfused = modulated_conv2d(x, weight, styles, demodulate, fused=False)
        torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)


def test_minibatch_stddev_appends_group_spread():
    layer = MinibatchStdDev(group_size=2)
    same = torch.randn(1, 4, 4, 4).repeat(4, 1, 1, 1)
    out = layer(same)
    assert out.shape == (4, 5, 4, 4)
    assert out[:, 4].abs().max().item() < 1e-3  # identical samples: no spread
    spread = layer(torch.randn(6, 4, 4, 4) * 3)  # 6 is not divisible by 4: groups of gcd(6, 2) = 2
    assert spread[:, 4].min().item() > 0.5


def test_channel_widths_follow_base_and_cap():
    assert [channels_at(r, 16384, 512) for r in (4, 32, 64, 256)] == [512, 512, 256, 64]
    assert auto_r1_gamma(64) == pytest.approx(0.0002 * 64**2 / 32)
    assert auto_r1_gamma(256) == pytest.approx(0.0002 * 256**2 / 16)


# --- shapes and input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("image_channels,num_labels", [(1, 2), (3, 3)])
def test_shapes_of_every_variant(variant, image_channels, num_labels):
    model = tiny_model(variant, image_channels, num_labels)
    real = random_batch(model, 4, image_channels, num_labels)
    d_input, condition = model._split_real(real)
    assert model.nets["D"](d_input, condition).shape == (4,)
    cond = None if condition is None else condition[:2]
    fake = model.nets["G"](torch.randn(2, 16), cond)
    expected_channels = {"B-SG": image_channels + num_labels, "M-SG": num_labels, "C-SG": image_channels}[variant]
    assert fake.shape == (2, expected_channels, 32, 32)
    masks = torch.randint(0, num_labels, (3, 32, 32)) if variant == "C-SG" else None
    images, out_masks = model.sample(3, seed=0, masks=masks)
    assert images.dtype == torch.float32 and out_masks.dtype == torch.int64
    assert images.shape == (3, 0 if variant == "M-SG" else image_channels, 32, 32)
    assert out_masks.shape == (3, 32, 32)
    assert images.abs().le(1.0).all() and 0 <= out_masks.min() and out_masks.max() < num_labels
    if variant == "C-SG":
        assert torch.equal(out_masks, masks)


@pytest.mark.parametrize("size", [64, 128])
def test_larger_resolutions_build_and_generate(size):
    model = tiny_model("B-SG", size=size, channel_base=512)
    assert model.nets["G"].num_ws == 2 * int(np.log2(size)) - 2
    assert model.nets["G"](torch.randn(2, 16)).shape == (2, 3, size, size)


@pytest.mark.parametrize("shape,message", [
    ((16, 16, 16), "2D only"), ((64, 32), "square"), ((48, 48), "power-of-two"), ((16, 16), "32 to 512"),
    ((1024, 1024), "32 to 512"),
])
def test_unsupported_shapes_are_user_errors(shape, message):
    with pytest.raises(UserError, match=message):
        StyleGAN2(StyleGAN2Params(**TINY), DataInfo(shape, 1, 2))


def test_params_are_validated_through_the_registry():
    with pytest.raises(UserError, match="model.params.variant"):
        build_model("stylegan2", {"variant": "X-SG"}, DataInfo((32, 32), 1, 2))
    with pytest.raises(UserError, match="zconcat"):
        build_model("stylegan2", {"pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}, DataInfo((32, 32), 1, 2))
    model = build_model("stylegan2", {**TINY, "variant": "C-SG"}, DataInfo((32, 32), 1, 2))
    assert model.capabilities.mask_conditional and model.capabilities.truncation


def test_mask_only_codec_drops_the_image():
    model = tiny_model("M-SG")
    mask = torch.randint(0, 2, (2, 32, 32))
    encoded = model.codec.encode(torch.rand(2, 1, 32, 32), mask)
    assert encoded.shape == (2, 2, 32, 32)
    image, decoded = model.codec.decode(encoded)
    assert image.shape == (2, 0, 32, 32) and torch.equal(decoded, mask)


def test_c_sg_needs_valid_masks():
    model = tiny_model("C-SG")
    with pytest.raises(UserError, match="--masks DIR"):
        model.sample(2, seed=0)
    with pytest.raises(UserError, match="2 masks of shape"):
        model.sample(2, seed=0, masks=torch.zeros(3, 32, 32, dtype=torch.long))
    with pytest.raises(UserError, match="labels must lie in 0..1"):
        model.sample(1, seed=0, masks=torch.full((1, 32, 32), 2))
    with pytest.raises(UserError, match="--masks"):
        tiny_model("B-SG").sample(1, seed=0, masks=torch.zeros(1, 32, 32, dtype=torch.long))


# --- mapping: truncation and style mixing ---------------------------------------------------------------


def test_truncation_psi_zero_gives_w_avg_and_psi_one_is_a_no_op():
    model = tiny_model("B-SG")
    mapping = model.ema_net.mapping
    mapping.w_avg.copy_(torch.randn(16))  # a trained-looking centre, not zeros
    z = torch.randn(5, 16)
    centred = mapping(z, truncation=0.0)
    torch.testing.assert_close(centred, mapping.w_avg.expand_as(centred))
    torch.testing.assert_close(mapping(z, truncation=1.0), mapping(z))
    half = mapping(z, truncation=0.5)
    torch.testing.assert_close(half, (mapping(z) + mapping.w_avg) / 2)
    images, masks = model.sample(4, seed=3, truncation=0.0)
    assert torch.equal(images, images[:1].expand_as(images)) and torch.equal(masks, masks[:1].expand_as(masks))
    untruncated, _ = model.sample(4, seed=3)
    assert torch.equal(model.sample(4, seed=3, truncation=1.0)[0], untruncated)
    assert (untruncated - untruncated[:1]).abs().amax(dim=(1, 2, 3))[1:].min() > 1e-3  # z still matters


def test_w_avg_tracks_the_mean_w_during_generator_steps():
    model = tiny_model("B-SG")
    mapping = model.nets["G"].mapping
    assert mapping.w_avg.abs().sum() == 0
    model.accumulate_gradients("Gmain", random_batch(model, 8))
    assert mapping.w_avg.abs().sum() > 0
    ws = mapping(torch.randn(4096, 16))[:, 0]
    expected_direction = ws.mean(dim=0)
    cosine = torch.nn.functional.cosine_similarity(mapping.w_avg, expected_direction, dim=0)
    assert cosine > 0.9  # an EMA of batch means of w


def test_style_mixing_switches_to_a_second_w_at_a_cutoff():
    generator = tiny_model("B-SG").nets["G"]
    torch.manual_seed(4)
    _, ws = generator(torch.randn(64, 16), mixing_prob=1.0, return_ws=True)
    num_ws = generator.num_ws
    changes = (ws[:, 1:] != ws[:, :-1]).any(dim=2)  # [B, num_ws - 1]: where the w changes
    assert torch.equal(changes.sum(dim=1), torch.ones(64, dtype=torch.long))  # exactly one cutoff per sample
    cutoffs = changes.float().argmax(dim=1) + 1
    assert cutoffs.min() >= 1 and cutoffs.max() <= num_ws - 1 and len(cutoffs.unique()) > 2
    _, unmixed = generator(torch.randn(64, 16), mixing_prob=0.0, return_ws=True)
    assert not (unmixed[:, 1:] != unmixed[:, :-1]).any()
    some = generator.mix_styles(generator.mapping(torch.randn(4000, 16)), truncation=1.0, prob=0.5)
    mixed_fraction = (some[:, 1:] != some[:, :-1]).any(dim=2).any(dim=1).float().mean().item()
    assert mixed_fraction == pytest.approx(0.5, abs=0.04)


def test_sample_does_not_depend_on_batch_size():
    model = tiny_model("B-SG")
    a, ma = model.sample(5, seed=7, batch_size=2)
    b, mb = model.sample(5, seed=7, batch_size=5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(ma, mb)
    c, _ = model.sample(5, seed=8, batch_size=5)
    assert not torch.allclose(a, c)


# --- losses, regularisation and augmentation ---------------------------------------------------------


def test_phases_and_their_intervals():
    model = tiny_model("B-SG")
    assert [(p.name, p.optimizer, p.interval) for p in model.phases()] == [
        ("Gmain", "G", 1), ("Greg", "G", 4), ("Dmain", "D", 1), ("Dreg", "D", 16)]
    plain = tiny_model("B-SG", r1_gamma=0.0, pl_weight=0.0)
    assert [p.name for p in plain.phases()] == ["Gmain", "Dmain"]
    assert tiny_model("B-SG").r1_gamma == pytest.approx(auto_r1_gamma(32))


def _grad_norm(module: torch.nn.Module) -> float:
    return float(sum(p.grad.square().sum() for p in module.parameters() if p.grad is not None).sqrt())


@pytest.mark.parametrize("variant", VARIANTS)
def test_regularisers_are_positive_and_scaled_by_their_interval(variant):
    grads = {}
    for interval in (1, 4):
        model = tiny_model(variant, r1_interval=interval, pl_interval=interval, augment={"mode": "none"})
        real = random_batch(model, 4)
        torch.manual_seed(5)
        r1 = model.accumulate_gradients("Dreg", real)["r1"]
        torch.manual_seed(6)
        pl = model.accumulate_gradients("Greg", real)["pl_penalty"]
        assert r1.item() > 0 and pl.item() > 0
        assert model.pl_mean.item() > 0  # the moving target path length moved off zero
        grads[interval] = (_grad_norm(model.nets["D"]), _grad_norm(model.nets["G"]))
    assert grads[4][0] == pytest.approx(4 * grads[1][0], rel=1e-4)
    assert grads[4][1] == pytest.approx(4 * grads[1][1], rel=1e-4)


def test_r1_reaches_the_discriminator_through_the_augmentation():
    model = tiny_model("C-SG", augment={"mode": "fixed", "p": 1.0})
    model.accumulate_gradients("Dreg", random_batch(model, 4))
    assert all(p.grad is not None for p in model.nets["D"].parameters() if p.dim() > 1)
    assert not any(p.grad is not None for p in model.nets["G"].parameters())


class _Spy(torch.nn.Module):
    """Wraps the augmentation pipe and records the channel count of every tensor it augments."""

    def __init__(self, pipe):
        super().__init__()
        self.pipe, self.calls = pipe, []

    def forward(self, x):
        self.calls.append(x.shape[1])
        return self.pipe(x)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.pipe, name)


@pytest.mark.parametrize("variant,channels", [("B-SG", 3), ("M-SG", 3), ("C-SG", 3)])
def test_every_discriminator_pass_sees_augmented_inputs(variant, channels):
    # B-SG: image + 2 one-hot channels; M-SG: a blank image channel + 2 mask channels (the pipe colours
    # only the blank one); C-SG: image + the one-hot condition mask, warped together.
    model = tiny_model(variant)
    model.augment = _Spy(model.augment)
    real = random_batch(model, 4)
    for phase, passes in [("Gmain", 1), ("Greg", 0), ("Dmain", 2), ("Dreg", 1)]:
        model.augment.calls.clear()
        model.accumulate_gradients(phase, real)
        assert model.augment.calls == [channels] * passes, phase


def test_ada_p_rises_when_the_discriminator_is_overconfident():
    # Real toy discs against an untrained generator: D soon gives every real a positive logit
    # (r_t ~ 1 > target 0.6), so p must climb; with a target D cannot exceed (1.0), p must stay at 0.
    images, masks = disc_pairs(32, seed=0)
    final = {}
    for target in (0.6, 1.0):
        model = tiny_model("B-SG", r1_gamma=0.0, pl_weight=0.0,
                           augment={"mode": "ada", "target": target, "speed_kimg": 0.2, "interval": 2})
        real_all = model.codec.encode(images, masks)
        optimiser = torch.optim.Adam(model.nets["D"].parameters(), lr=0.005, betas=(0.0, 0.99))
        for step in range(30):
            optimiser.zero_grad(set_to_none=True)
            out = model.accumulate_gradients("Dmain", real_all[(step * 8) % 32 : (step * 8) % 32 + 8])
            optimiser.step()
        final[target] = (model.augment.p, out["ada_rt"].item())
    p, rt = final[0.6]
    assert rt > 0.6 and p > 0.2
    assert final[1.0][0] == 0.0


def test_extra_state_round_trip_keeps_ada_p_and_path_length_mean():
    model = tiny_model("B-SG", augment={"mode": "ada", "speed_kimg": 0.01, "interval": 1})
    model.augment.observe(torch.ones(8))
    model.pl_mean.fill_(0.37)
    state = model.extra_state()
    assert model.augment.p > 0
    restored = tiny_model("B-SG", augment={"mode": "ada", "speed_kimg": 0.01, "interval": 1})
    restored.load_extra_state(state)
    assert restored.augment.p == model.augment.p and restored.pl_mean.item() == pytest.approx(0.37)


# --- learning ---------------------------------------------------------------------------------------------


def _train(model: StyleGAN2, images: torch.Tensor, masks: torch.Tensor, steps: int, batch: int = 8) -> None:
    """The trainer's schedule in miniature: phases at their intervals, Adam (0, 0.99), EMA after G steps."""
    optimisers = {k: torch.optim.Adam(net.parameters(), lr=0.0025, betas=(0.0, 0.99)) for k, net in model.nets.items()}
    real_all = model.codec.encode(images, masks)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        idx = order[(step * batch) % len(images):][:batch]
        for phase in model.phases():
            if step % phase.interval:
                continue
            optimisers[phase.optimizer].zero_grad(set_to_none=True)
            model.accumulate_gradients(phase.name, real_all[idx])
            optimisers[phase.optimizer].step()
            if phase.optimizer == "G":
                model.update_ema(0.9)


def mask_contrast(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean image intensity inside the masks minus outside."""
    inside = masks.bool().unsqueeze(1).expand_as(images)
    return (images[inside].mean() - images[~inside].mean()).item()


@pytest.mark.slow  # about 15 s on an idle CPU, 25-35 s on the shared one
def test_c_sg_renders_images_that_follow_new_masks():
    # Training pairs: the image is a bright disc exactly where the mask is. After a short training, C-SG
    # must draw bright pixels inside NEW masks (discs at unseen positions) and dark ones outside, far
    # more than its untrained self does (toRGB already passes the mask through: ~0.4), and far more than
    # for masks it was not given (another sample's mask: what an unconditional model such as B-SG gets;
    # ~0.4 too, because toy discs overlap around the centre). Measured after 100 steps: 1.08-1.15.
    images, masks = disc_pairs(64, seed=1)
    _, new_masks = disc_pairs(16, seed=99)
    model = tiny_model("C-SG", augment={"mode": "none"}, channel_base=512, channel_max=32, z_dim=32, w_dim=32)
    untrained, _ = model.sample(16, seed=0, masks=new_masks)
    _train(model, images, masks, steps=100)
    rendered, _ = model.sample(16, seed=0, masks=new_masks)
    given = mask_contrast(rendered, new_masks)
    shuffled = mask_contrast(rendered, new_masks.roll(1, dims=0))
    real = mask_contrast(images, masks)  # 1.2 on the toy data (0.2 -> 0.8 of full scale)
    assert given > 0.75 * real
    assert given > mask_contrast(untrained, new_masks) + 0.4
    assert given > shuffled + 0.4


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_phase_runs_under_bf16_autocast(variant):
    # The trainer wraps phases in bf16 autocast on CUDA; the CPU autocast exercises the same dtype mixing.
    model = tiny_model(variant, augment={"mode": "fixed", "p": 0.5})
    real = random_batch(model, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for phase in model.phases():
            out = model.accumulate_gradients(phase.name, real)
            assert all(torch.isfinite(v).all() for v in out.values()), phase.name
    assert all(torch.isfinite(p.grad).all() for p in model.nets.parameters() if p.grad is not None)


@pytest.mark.parametrize("variant", ["B-SG", "C-SG"])
def test_scaled_mask_encoding(variant):
    model = tiny_model(variant, pairing={"mask_encoding": "scaled"})
    real = random_batch(model, 4)
    assert real.shape[1] == 2  # image + one tanh mask channel
    for phase in model.phases():
        model.accumulate_gradients(phase.name, real)
    masks = torch.randint(0, 2, (2, 32, 32)) if variant == "C-SG" else None
    images, out_masks = model.sample(2, seed=0, masks=masks)
    assert images.shape == (2, 1, 32, 32) and set(out_masks.unique().tolist()) <= {0, 1}
