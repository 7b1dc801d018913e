"""FastGAN: shapes, skip-layer excitation, noise, the self-supervised discriminator and DiffAugment."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from synthmed.data.toy2d import prepare_toy_2d
from synthmed.errors import UserError
from synthmed.models.fastgan import (
    NoiseInjection,
    SkipLayerExcitation,
    hinge_d_loss,
    reconstruction_targets,
    sle_pairs,
)
from synthmed.models.registry import DataInfo, build_model
from synthmed.sample.sampler import sample_to_folder
from synthmed.train.checkpoint import load_generator
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

TINY = {"latent_dim": 8, "base_channels": 4}


def fastgan(size=32, image_channels=1, num_labels=2, **params):
    return build_model("fastgan", {**TINY, **params}, DataInfo((size, size), image_channels, num_labels))


def disc_batch(model, n=8, size=32, seed=0):
    """Network tensor of ``n`` pairs: a bright disc of random radius and position, the disc as label 1."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = size * (0.12 + 0.18 * torch.rand(n, 1, 1, generator=g))
    cy, cx = (size / 2 + size / 4 * (torch.rand(2, n, 1, 1, generator=g) - 0.5)).unbind()
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).long()
    image = torch.where(mask.bool(), 0.6, -0.7) + 0.05 * torch.randn(n, size, size, generator=g)
    return model.codec.encode(image.clamp(-1, 1).unsqueeze(1), mask)


@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize("encoding,mask_channels", [("onehot", 3), ("scaled", 1)])
def test_shapes_of_gray_and_rgb_pairs(image_channels, encoding, mask_channels):
    model = fastgan(image_channels=image_channels, num_labels=3, pairing={"mask_encoding": encoding})
    channels = image_channels + mask_channels
    fake = model.nets["G"](torch.randn(2, 8))
    assert fake.shape == (2, channels, 32, 32)
    logits, whole, part = model.nets["D"](fake, quarter=2)
    assert logits.shape == (2, 25)  # a 5x5 map from the 8x8 features
    assert whole.shape == (2, channels, 32, 32) and part.shape == (2, channels, 16, 16)
    images, masks = model.sample(3, seed=0)
    assert images.shape == (3, image_channels, 32, 32) and images.abs().max() <= 1
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.int64 and 0 <= masks.min() and masks.max() <= 2


def test_large_sizes_reconstruct_at_most_128_pixels():
    model = fastgan(size=512, base_channels=2)  # D brings 512 down to 256 with a strided stem
    fake = model.nets["G"](torch.randn(1, 8))
    assert fake.shape == (1, 3, 512, 512)
    model.nets["D"].eval()  # batch norm with a batch of one
    logits, whole, part = model.nets["D"](fake, quarter=0)
    assert logits.shape == (1, 25) and whole.shape[-1] == 128 and part.shape[-1] == 128


def test_skip_layer_excitation_pairs_follow_the_paper():
    assert sle_pairs(1024) == [(4, 64), (8, 128), (16, 256), (32, 512)]  # the paper's 8->128, 16->256, 32->512
    assert sle_pairs(256) == [(4, 64), (8, 128), (16, 256)]
    assert sle_pairs(64) == [(4, 64)]
    assert sle_pairs(32) == [(4, 32)]  # too small for a 16x ratio: gate 32 by 4


def test_skip_layer_excitation_gates_lie_in_0_1_and_change_the_output():
    model = fastgan()
    generator = model.nets["G"]  # training mode: batch statistics give outputs of order 1 before any training
    (excitation,) = [m for m in generator.modules() if isinstance(m, SkipLayerExcitation)]
    gates = []
    excitation.register_forward_hook(lambda module, args, out: gates.append(module.gate(args[0])))
    z = torch.randn(4, 8)
    with torch.no_grad():
        gated = generator(z)
        assert gates[0].shape == (4, 8, 1, 1)  # one gate per channel of the 32x32 stage (2 x base_channels)
        assert (gates[0] > 0).all() and (gates[0] < 1).all() and gates[0].std() > 0
        bypass = excitation.register_forward_hook(lambda module, args, out: args[1])  # ungated high-res map
        ungated = generator(z)
        bypass.remove()
    assert (gated - ungated).abs().max() > 0.05


def test_noise_changes_samples_but_sampling_stays_seeded_and_batch_independent():
    model = fastgan()
    for noise in (m for m in model.ema_net.modules() if isinstance(m, NoiseInjection)):
        noise.weight.data.fill_(0.5)  # starts at 0; give it a visible strength
    a_img, a_mask = model.sample(5, seed=3, batch_size=5)
    b_img, b_mask = model.sample(5, seed=3, batch_size=2)
    assert torch.allclose(a_img, b_img, atol=1e-5) and torch.equal(a_mask, b_mask)
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert (model.ema_net(z) - model.ema_net(z)).abs().max() > 1e-3  # fresh noise on every call
    assert not any(isinstance(m, NoiseInjection) for m in fastgan(noise_injection=False).modules())


@pytest.mark.parametrize(
    "shape,params,message",
    [
        ((32, 32, 32), {}, "'fastgan' generates 2D images .* shape \\[32, 32, 32\\]"),
        ((48, 48), {}, "image shape \\[48, 48\\] is not supported"),
        ((16, 16), {}, "image shape \\[16, 16\\] is not supported"),
        ((64, 32), {}, "must be square"),
        ((2048, 2048), {}, "from 32 to 1024"),
        ((32, 32), {"pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}, "pairing.layout"),
        ((32, 32), {"augment": "color,flip"}, "model.params.augment: .*'flip'"),
    ],
)
def test_unsupported_data_or_parameters_are_user_errors(shape, params, message):
    with pytest.raises(UserError, match=message):
        build_model("fastgan", {**TINY, **params}, DataInfo(shape, 1, 2))


def test_hinge_loss_known_values():
    # real 2 (beyond the margin) and 0; fake -2 (beyond the margin) and 0
    assert hinge_d_loss(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])).item() == pytest.approx(1.0)


def test_reconstruction_targets_are_the_downsampled_image_and_quarter():
    real = torch.arange(2 * 64 * 64, dtype=torch.float32).view(1, 2, 64, 64)
    whole, part = reconstruction_targets(real, quarter=1, whole_size=32, part_size=16)  # 1: top right
    assert torch.allclose(whole, F.avg_pool2d(real, 2))
    assert torch.allclose(part, F.avg_pool2d(real[:, :, :32, 32:], 2))


def test_discriminator_sees_unaugmented_real_and_fake_in_separate_passes():
    model = fastgan(augment="")
    real = disc_batch(model, n=4)
    seen = []
    model.nets["D"].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    out = model.accumulate_gradients("D", real)
    assert len(seen) == 2 and torch.equal(seen[0], real)
    assert seen[1].shape == real.shape and not any(torch.equal(f, r) for f in seen[1] for r in real)
    assert {"loss/D", "loss/D_recon"} <= set(out) and all(math.isfinite(v) for v in out.values())
    assert all(p.grad is not None for p in model.nets["D"].parameters())  # decoders included


def test_diffaugment_is_applied_before_every_discriminator_pass():
    model = fastgan()  # color,translation,cutout
    real = disc_batch(model, n=4)
    seen, generated = [], []
    model.nets["D"].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    model.nets["G"].register_forward_hook(lambda module, args, out: generated.append(out.detach().clone()))
    model.accumulate_gradients("D", real)
    model.accumulate_gradients("G", real)
    assert len(seen) == 3 and len(generated) == 2
    assert not torch.equal(seen[0], real) and seen[0].shape == real.shape
    for shown, fake in zip(seen[1:], generated):
        assert shown.shape == fake.shape and not torch.equal(shown, fake)
    # colour touches the image channel only: cut-out/translated mask channels still sum to 0 or 1
    assert torch.isin(seen[0][:, 1:].sum(dim=1).round(decimals=4), torch.tensor([0.0, 1.0])).all()
    assert all(p.grad is not None for p in model.nets["G"].parameters())


def test_decoders_learn_to_reconstruct_a_fixed_batch():
    torch.manual_seed(0)
    model = fastgan(augment="", base_channels=8)  # decoders 16 -> 8 channels (4 -> 2 at base 4 learn too slowly)
    real = disc_batch(model, n=8)
    optimizer = torch.optim.Adam(model.nets["D"].parameters(), lr=1e-3, betas=(0.5, 0.999))
    recon = []
    for _ in range(50):
        optimizer.zero_grad(set_to_none=True)
        recon.append(model.accumulate_gradients("D", real)["loss/D_recon"].item())
        optimizer.step()
    first, last = sum(recon[:5]) / 5, sum(recon[-5:]) / 5
    # The best picture that ignores the input (the batch's mean image) scores this L1, averaged over quarters:
    # beating it means the decoders read each sample's disc from D's features.
    mean_image = 0.0
    for quarter in range(4):
        whole, part = reconstruction_targets(real, quarter, 32, 16)
        mean_image += ((whole - whole.mean(0)).abs().mean() + (part - part.mean(0)).abs().mean()).item() / 4
    assert last < 0.3 * first and last < 0.8 * mean_image, (first, last, mean_image)


def tiny_run_config(manifest, out, steps=4, **params):
    return {
        "model": {"name": "fastgan", "params": {**TINY, **params}},
        "data": {"manifest": str(manifest)},
        "optim": {"G": {"lr": 2e-4, "betas": [0.5, 0.999]}, "D": {"lr": 2e-4, "betas": [0.5, 0.999]}},
        "train": {"steps": steps, "batch_size": 4, "log_every": 2, "checkpoint_every": 2, "progress": False},
        "out": str(out),
    }


def test_tiny_training_run_then_sampling_to_png(toy_prepared_2d, tmp_path):
    run = train(resolve_config(tiny_run_config(toy_prepared_2d, tmp_path / "run")))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert all(math.isfinite(r[k]) for r in records for k in ("loss/D", "loss/D_recon", "loss/G"))
    generator, _ = load_generator(run)
    images, masks = generator.sample(3, seed=0)
    assert images.shape == (3, 1, 32, 32) and masks.shape == (3, 32, 32) and set(masks.unique().tolist()) <= {0, 1}
    again, _ = generator.sample(3, seed=0, batch_size=1)
    assert torch.allclose(images, again, atol=1e-5)
    folder = sample_to_folder(run, 2, tmp_path / "synthetic")
    assert len(list((folder / "imagesTr").glob("*.png"))) == 2 and len(list((folder / "labelsTr").glob("*.png"))) == 2


def test_tiny_training_run_on_rgb_pairs(tmp_path):
    manifest = prepare_toy_2d(tmp_path / "rgb", n=12, size=32, rgb=True)
    run = train(resolve_config(tiny_run_config(manifest, tmp_path / "run", steps=2, pairing={"mask_encoding": "scaled"})))
    images, masks = load_generator(run)[0].sample(2, seed=1)
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
