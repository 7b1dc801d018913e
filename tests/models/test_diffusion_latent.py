"""Latent diffusion: shapes, seeding, the two-phase schedule, the autoencoder's learning, exact resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.cli import main
from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.models.base import Phase
from synthmed.models.registry import DataInfo, build_model, validate_params
from synthmed.sample.sampler import sample_to_folder
from synthmed.train.checkpoint import EMA_KEY, list_checkpoints, load_generator
from synthmed.train.config import TrainSection, resolve_config
from synthmed.train.loop import TrainStep, train

AE = {"channels": [8, 8, 8], "latent_channels": 3, "norm_num_groups": 4}  # latent: a quarter of each side
TINY = {"variant": "latent", "channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8,
        "norm_num_groups": 4}
pytestmark = pytest.mark.usefixtures("one_thread")


def latent_model(shape=(32, 32), labels=3, ae=None, **params):
    torch.manual_seed(0)
    return build_model("diffusion", {**TINY, "autoencoder": {**AE, **(ae or {})}, **params},
                       DataInfo(shape, 1, labels))


def real_batch(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = model.shape
    images = torch.rand(n, 1, *shape, generator=g) * 2 - 1
    masks = torch.randint(0, model.codec.num_labels, (n, *shape), generator=g)
    return model.codec.encode(images, masks)


def step_runner(model, lr=1e-3):
    optimizers = {k: torch.optim.Adam(net.parameters(), lr=lr) for k, net in model.nets.items()}
    return TrainStep(model, optimizers, TrainSection(batch_size=4))


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_shapes_and_dtypes_in_2d_and_3d(shape):
    model = latent_model(shape)
    assert model.sample_shape == tuple(s // 4 for s in shape) and model.sample_channels == 3
    real = real_batch(model, n=2)
    for phase, net in (("autoencoder", "autoencoder"), ("denoise", "unet")):
        losses = model.accumulate_gradients(phase, real)
        assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values()), losses
        assert all(p.grad is not None for p in model.nets[net].parameters()), net
    assert model.latent(2).shape == (2, 3, *model.sample_shape)
    images, labels = model.sample(3, seed=0, steps=2)
    assert images.shape == (3, 1, *shape) and images.dtype == torch.float32
    assert labels.shape == (3, *shape) and labels.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1 and set(labels.unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("params", [{}, {"scheduler": "rflow"}])
def test_the_same_seed_gives_the_same_samples_for_any_batch_size(params):
    model = latent_model(**params)
    for sampler in model.capabilities.samplers:
        a_img, a_mask = model.sample(5, seed=3, batch_size=5, sampler=sampler, steps=3)
        b_img, b_mask = model.sample(5, seed=3, batch_size=2, sampler=sampler, steps=3)
        assert torch.allclose(a_img, b_img, atol=1e-5) and torch.equal(a_mask, b_mask), sampler
        c_img, _ = model.sample(5, seed=4, batch_size=5, sampler=sampler, steps=3)
        assert (a_img - c_img).abs().max() > 1e-3, sampler


def test_phase_windows():
    phase = Phase("denoise", "unet", interval=2, start_step=4, stop_step=9)
    assert [s for s in range(12) if phase.due(s)] == [4, 6, 8]
    assert [s for s in range(3) if Phase("G", "G").due(s)] == [0, 1, 2]


def test_the_unet_trains_only_after_the_autoencoder_steps_and_the_autoencoder_only_before():
    model = latent_model(ae={"steps": 3})
    run = step_runner(model)
    real = real_batch(model)
    unet_before = [p.clone() for p in model.nets["unet"].parameters()]
    ran = []
    for step in range(3):
        ran.append(sorted(k for losses in run(step, real) for k in losses))
    assert ran == [["loss/kl", "loss/recon"]] * 3
    assert all(torch.equal(a, b) for a, b in zip(unet_before, model.nets["unet"].parameters()))
    assert not bool(model.nets["autoencoder"].scale_measured)
    autoencoder_after = [p.clone() for p in model.nets["autoencoder"].parameters()]
    for step in range(3, 5):
        assert sorted(k for losses in run(step, real) for k in losses) == ["loss/denoise"]
    assert all(torch.equal(a, b) for a, b in zip(autoencoder_after, model.nets["autoencoder"].parameters()))
    assert bool(model.nets["autoencoder"].scale_measured)
    # the scale factor brings the (posterior mean) latents of the first diffusion batch to unit std
    mu = model.nets["autoencoder"].kl.encode(model._onehot_to_signed(real, 1))[0].detach()
    assert float((mu * model.nets["autoencoder"].scale_factor).std()) == pytest.approx(1.0, rel=1e-4)


def test_the_autoencoder_phase_learns_to_reconstruct_a_fixed_batch(toy_prepared_2d):
    loaded = load_manifest(toy_prepared_2d)
    images, masks = load_arrays(loaded, loaded.split_ids("train")[:8])  # 8 toy discs, 32x32
    model = latent_model(labels=2, ae={"steps": 1000})
    real = model.codec.encode(torch.from_numpy(images), torch.from_numpy(masks))
    run = step_runner(model, lr=2e-3)
    before = model.reconstruction_error(real)
    for step in range(30):
        run(step, real)
    after = model.reconstruction_error(real)
    print(f"autoencoder reconstruction L1 on 8 toy discs: untrained {before:.3f}, after 30 steps {after:.3f}")
    assert after < 0.5 * before, (before, after)


def test_given_scale_factor_is_kept_and_bad_params_are_refused():
    model = latent_model(ae={"scale_factor": 0.5})
    assert float(model.nets["autoencoder"].scale_factor) == 0.5 and bool(model.nets["autoencoder"].scale_measured)
    with pytest.raises(UserError, match="only variant latent"):
        validate_params("diffusion", {"variant": "joint", "autoencoder": {}})
    with pytest.raises(UserError, match="autoencoder"):
        latent_model(shape=(30, 30))  # 30 is not divisible by the autoencoder's 4
    with pytest.raises(UserError, match="on the latent"):
        latent_model(shape=(36, 36))  # latent 9x9: the U-Net cannot halve it


def run_config(manifest: Path, out: Path, steps: int, ae_steps: int) -> dict:
    return {
        "model": {"name": "diffusion", "params": {**TINY, "autoencoder": {**AE, "steps": ae_steps}}},
        "data": {"manifest": str(manifest)},
        "optim": {"unet": {"lr": 2e-4}, "autoencoder": {"lr": 1e-3}},
        "train": {"steps": steps, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "progress": False},
        "out": str(out),
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_resume_across_the_switch_is_exact_and_samples_to_png(toy_prepared_2d, tmp_path):
    straight = train(resolve_config(run_config(toy_prepared_2d, tmp_path / "straight", steps=6, ae_steps=3)))
    config = run_config(toy_prepared_2d, tmp_path / "resumed", steps=2, ae_steps=3)
    train(resolve_config(config))  # stops before the switch, resumes across it, then again after it
    train(resolve_config(config, ["train.steps=4"]), resume=True)
    resumed = train(resolve_config(config, ["train.steps=6"]), resume=True)
    keys = ("step", "loss/recon", "loss/kl", "loss/denoise")
    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    assert [[r.get(k) for k in keys] for r in a] == [[r.get(k) for k in keys] for r in b]
    assert [sorted(k for k in r if k.startswith("loss/")) for r in a] == [["loss/kl", "loss/recon"]] * 3 + [["loss/denoise"]] * 3
    final_a = torch.load(list_checkpoints(straight)[-1], weights_only=True)
    final_b = torch.load(list_checkpoints(resumed)[-1], weights_only=True)
    for entry in ("nets", EMA_KEY):
        for name, tensor in final_a[entry].items():
            assert torch.equal(tensor, final_b[entry][name]), name
    assert "autoencoder.scale_factor" in final_a["nets"]
    model, _ = load_generator(resumed)
    assert bool(model.nets["autoencoder"].scale_measured)
    folder = sample_to_folder(resumed, 2, tmp_path / "synthetic", steps=3)
    assert len(list((folder / "imagesTr").glob("*.png"))) == 2
    from safetensors.torch import load_file

    exported = load_file(resumed / "generator.safetensors")  # the EMA U-Net and the autoencoder that decodes
    for name, tensor in model.nets["autoencoder"].state_dict().items():
        assert torch.equal(exported[f"autoencoder.{name}"], tensor), name
    assert all(torch.equal(exported[k], v) for k, v in model.ema_net.state_dict().items())


# --- classifier-free guidance ---------------------------------------------------------------------

def two_class_discs(tmp_path: Path) -> Path:
    """16x16 toy discs; every other disc darkened from +0.6 to -0.4 (class "dark", the rest "bright")."""
    from synthmed.data.toy2d import prepare_toy_2d

    manifest = load_manifest(prepare_toy_2d(tmp_path / "toy", n=24, size=16))
    data = json.loads(manifest.path.read_text())
    for i, case in enumerate(data["cases"]):
        path = manifest.cache_path(case["id"])
        with np.load(path) as z:
            image, mask = z["image"], z["mask"]
        if i % 2:
            image = np.where(mask[None] > 0, image - 1.0, image).astype(np.float32)
        np.savez(path, image=image, mask=mask)
        case["brightness"] = "dark" if i % 2 else "bright"
    manifest.path.write_text(json.dumps(data))
    return manifest.path


def inside_mean(images: torch.Tensor, masks: torch.Tensor) -> float:
    return float(images[:, 0][masks > 0].mean())


@pytest.mark.slow
def test_guided_samples_of_the_bright_class_are_brighter_and_guidance_widens_the_gap(tmp_path, capsys):
    manifest = two_class_discs(tmp_path)
    run = train(resolve_config({
        "model": {"name": "diffusion", "params": {
            "channels": [16, 32], "attention_levels": [False, True], "num_head_channels": 16, "norm_num_groups": 8,
            "scheduler": "rflow", "num_classes": 2, "p_uncond": 0.2}},
        "data": {"manifest": str(manifest), "class_key": "brightness", "classes": ["bright", "dark"]},
        "optim": {"unet": {"lr": 2e-3, "betas": [0.9, 0.999]}},
        "train": {"steps": 200, "batch_size": 8, "ema_kimg": 0.05, "log_every": 50, "checkpoint_every": 200,
                  "progress": False},
        "out": str(tmp_path / "run"),
    }))
    model, state = load_generator(run)
    assert state["data"]["classes"] == ["bright", "dark"] and model.capabilities.num_classes == 2
    gaps = {}
    for guidance in (1.0, 3.0):
        model.guidance_scale = guidance
        bright, dark = (inside_mean(*model.sample(16, seed=0, classes=[c] * 16, steps=20)) for c in (0, 1))
        gaps[guidance] = bright - dark
    with capsys.disabled():
        print(f"inside-disc brightness gap bright - dark (real 1.0): guidance 1: {gaps[1.0]:.3f}, 3: {gaps[3.0]:.3f}")
    assert gaps[1.0] > 0.3 and gaps[3.0] > gaps[1.0], gaps
    assert main(["sample", "--checkpoint", str(run), "-n", "2", "--class", "dark", "--steps", "2",
                 "--out", str(tmp_path / "dark")]) == 0
    assert "wrote 2 synthetic pairs" in capsys.readouterr().out


@pytest.mark.parametrize("variant", ["joint", "latent"])
def test_class_conditional_unet_null_class_and_seeded_guided_sampling(variant):
    params = {**TINY, "variant": variant, "num_classes": 2, "p_uncond": 0.5}
    if variant == "latent":
        params["autoencoder"] = AE
    torch.manual_seed(0)
    model = build_model("diffusion", params, DataInfo((32, 32), 1, 3))
    assert model.capabilities.num_classes == 2 and model.nets["unet"].class_embedding.num_embeddings == 3
    labels = model.training_classes(torch.tensor([0, 1, -1] * 100), 300, torch.device("cpu"))
    assert (labels[2::3] == 2).all()  # unknown -> the null class
    dropped = float((labels[0::3] == 2).float().mean())
    assert 0.4 < dropped < 0.6 and set(labels[0::3].tolist()) == {0, 2}
    phase = "autoencoder" if variant == "latent" else "denoise"
    model.accumulate_gradients("denoise", real_batch(model, n=2), classes=torch.tensor([0, 1]))
    assert all(torch.isfinite(v) for v in model.accumulate_gradients(phase, real_batch(model, n=2)).values())
    model.guidance_scale = 2.0
    a = model.sample(5, seed=3, batch_size=5, classes=[0, 1, 0, 1, 0], steps=2)[0]
    b = model.sample(5, seed=3, batch_size=2, classes=[0, 1, 0, 1, 0], steps=2)[0]
    assert torch.allclose(a, b, atol=1e-5)
    assert model.sample(2, seed=3, steps=2)[0].shape == (2, 1, 32, 32)  # classes drawn from the seed
    with pytest.raises(UserError, match="classes must be"):
        model.sample(2, seed=3, classes=[0, 2], steps=2)
