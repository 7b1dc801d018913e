"""2D DCGAN / WGAN (dcgan2d, wgan2d): the same module as the 3D baselines, with 2D layers; 2D GANs learn."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.models.registry import DataInfo, build_model
from synthmed.sample.sampler import sample_arrays
from synthmed.train.checkpoint import load_generator
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

TINY = {"latent_dim": 8, "base_channels": 4, "max_channels": 16}


@pytest.mark.parametrize("name", ["dcgan2d", "wgan2d"])
@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize("encoding,mask_channels", [("onehot", 3), ("scaled", 1)])
def test_shapes_of_gray_and_rgb_pairs(name, image_channels, encoding, mask_channels):
    params = {**TINY, "pairing": {"mask_encoding": encoding}}
    model = build_model(name, params, DataInfo((32, 32), image_channels, 3))
    fake = model.nets["G"](torch.randn(2, 8))
    assert fake.shape == (2, image_channels + mask_channels, 32, 32)
    assert model.nets["D"](fake).shape == (2,)
    images, masks = model.sample(3, seed=0)
    assert images.shape == (3, image_channels, 32, 32) and images.abs().max() <= 1
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.int64 and 0 <= masks.min() and masks.max() <= 2


@pytest.mark.parametrize("shape", [(16, 16), (64, 32), (16, 24)])
def test_anisotropic_shapes_use_2d_layers(shape):
    model = build_model("dcgan2d", TINY, DataInfo(shape, 1, 2))
    assert model.nets["G"](torch.randn(1, 8)).shape == (1, 3, *shape)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d))]
    assert convs and not any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d)) for m in model.modules())


def test_zconcat_doubles_the_width_and_splits_back():
    params = {**TINY, "pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}
    model = build_model("dcgan2d", params, DataInfo((32, 16), 1, 2))
    assert model.nets["G"](torch.randn(1, 8)).shape == (1, 1, 32, 32)
    images, masks = model.sample(2, seed=0)
    assert images.shape == (2, 1, 32, 16) and masks.shape == (2, 32, 16)


@pytest.mark.parametrize(
    "name,shape,message",
    [
        ("dcgan2d", (16, 16, 16), "'dcgan2d' generates 2D images .* shape \\[16, 16, 16\\] .* use 'dcgan3d'"),
        ("wgan2d", (16, 16, 16), "use 'wgan3d'"),
        ("dcgan3d", (32, 32), "'dcgan3d' generates 3D volumes .* shape \\[32, 32\\] .* use 'dcgan2d'"),
        ("wgan3d", (32, 32), "use 'wgan2d'"),
        ("dcgan2d", (12, 16), "image shape \\[12, 16\\] is not supported"),
        ("wgan2d", (4, 4), "image shape \\[4, 4\\] is not supported"),
    ],
)
def test_wrong_dimensionality_or_shape_is_a_user_error(name, shape, message):
    with pytest.raises(UserError, match=message):
        build_model(name, TINY, DataInfo(shape, 1, 2))


def test_sampling_is_seeded_and_batch_independent():
    model = build_model("wgan2d", TINY, DataInfo((32, 32), 3, 2))
    a_img, a_mask = model.sample(5, seed=3, batch_size=5)
    b_img, b_mask = model.sample(5, seed=3, batch_size=2)
    c_img, _ = model.sample(5, seed=4)
    assert torch.allclose(a_img, b_img, atol=1e-6) and torch.equal(a_mask, b_mask)
    assert not torch.allclose(a_img, c_img)


def test_discriminator_sees_real_and_fake_in_separate_passes():
    model = build_model("dcgan2d", TINY, DataInfo((32, 32), 1, 2))  # batch norm in D
    real = model.codec.encode(torch.rand(4, 1, 32, 32) * 2 - 1, torch.randint(0, 2, (4, 32, 32)))
    seen = []
    model.nets["D"].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    model.accumulate_gradients("D", real)
    assert len(seen) == 2 and torch.equal(seen[0], real)
    assert seen[1].shape == real.shape and not any(torch.equal(f, r) for f in seen[1] for r in real)


def test_gradient_penalty_in_2d_is_finite_and_reaches_every_critic_weight():
    model = build_model("wgan2d", TINY, DataInfo((32, 32), 1, 2))
    real = model.codec.encode(torch.rand(2, 1, 32, 32) * 2 - 1, torch.randint(0, 2, (2, 32, 32)))
    out = model.accumulate_gradients("D", real)
    assert torch.isfinite(out["gradient_penalty"]) and out["gradient_penalty"] >= 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.nets["D"].parameters())


def tiny_run_config(manifest, out, model, steps=4, **params):
    return {
        "model": {"name": model, "params": {**TINY, **params}},
        "data": {"manifest": str(manifest)},
        "optim": {"G": {"lr": 2e-4}, "D": {"lr": 2e-4}},
        "train": {"steps": steps, "batch_size": 4, "log_every": 2, "checkpoint_every": 2, "progress": False},
        "out": str(out),
    }


@pytest.mark.parametrize("model,params", [("dcgan2d", {}), ("wgan2d", {"constraint": "gp", "n_critic": 2}),
                                          ("wgan2d", {"constraint": "clip", "d_norm": "batch", "n_critic": 2})])
def test_tiny_training_run_then_sampling(toy_prepared_2d, tmp_path, model, params):
    run = train(resolve_config(tiny_run_config(toy_prepared_2d, tmp_path / "run", model, **params)))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert all(math.isfinite(v) for r in records for k, v in r.items() if k.startswith("loss/"))
    generator, state = load_generator(run)
    assert state["data_info"]["shape"] == [32, 32] and {k.split(".")[0] for k in state["nets"]} == {"G", "D"}
    images, masks = generator.sample(3, seed=0)
    assert images.shape == (3, 1, 32, 32) and masks.shape == (3, 32, 32) and set(masks.unique().tolist()) <= {0, 1}


def pair_statistics(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Foreground fraction, mean intensity inside / outside the mask, and image-mask agreement."""
    foreground = masks > 0
    return {
        "fraction": float(foreground.mean()),
        "inside": float(images[:, 0][foreground].mean()) if foreground.any() else 0.0,
        "outside": float(images[:, 0][~foreground].mean()),
        "agreement": float(((images[:, 0] > 0) == foreground).mean()),  # bright where the mask is
    }


LEARNING_RUNS = {  # model, params, (G lr, D lr), steps; ~30 s (dcgan2d) and ~60 s (fastgan) on two busy cores
    "dcgan2d": ({"latent_dim": 16, "base_channels": 8, "max_channels": 32}, (1e-3, 5e-4), 300),
    "fastgan": ({"latent_dim": 16, "base_channels": 4}, (2e-4, 2e-4), 250),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LEARNING_RUNS))
def test_2d_gan_learns_the_bright_disc(toy_prepared_2d, tmp_path, name):
    # Toy data: a bright disc (label 1) of random radius and centre on a dark noisy background, 32x32.
    manifest = load_manifest(toy_prepared_2d)
    real = pair_statistics(*load_arrays(manifest, manifest.split_ids("train")))
    params, (lr_g, lr_d), steps = LEARNING_RUNS[name]
    config = resolve_config({
        "model": {"name": name, "params": params},
        "data": {"manifest": str(toy_prepared_2d)},
        "optim": {"G": {"lr": lr_g, "betas": [0.5, 0.999]}, "D": {"lr": lr_d, "betas": [0.5, 0.999]}},
        "train": {"steps": steps, "batch_size": 8, "ema_kimg": 0.1, "log_every": 50, "checkpoint_every": steps,
                  "progress": False},
        "out": str(tmp_path / "run"),
    })
    torch.manual_seed(0)
    untrained = build_model(name, config.model.params, DataInfo((32, 32), 1, 2))
    before = pair_statistics(*(t.numpy() for t in untrained.sample(64, seed=0)))
    after = pair_statistics(*sample_arrays(train(config), 64, seed=0))

    for key in ("inside", "outside"):
        error_before, error_after = abs(before[key] - real[key]), abs(after[key] - real[key])
        assert error_after < 0.3 * error_before, (key, real[key], before[key], after[key])
    assert real["agreement"] > 0.95 and before["agreement"] < 0.7 and after["agreement"] > 0.85, (before, after)
    assert abs(after["fraction"] - real["fraction"]) < 0.5 * real["fraction"], (real, after)
