"""HA-GAN: shape arithmetic at every preset, seam-free assembly, training, resume, encoders, conditioning."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.errors import UserError
from synthmed.models import hagan
from synthmed.models.layers import minibatch_stddev
from synthmed.models.registry import DataInfo, build_model
from synthmed.train.checkpoint import list_checkpoints
from synthmed.config import read_yaml
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = {"latent_dim": 16, "feature_channels": 8, "g_max_channels": 32, "d_channels": 4, "d_max_channels": 16}
# thesis optimiser settings
OPTIM = {k: {"lr": lr, "betas": [0.0, 0.99], "eps": 1e-8} for k, lr in (("G", 1e-4), ("D", 4e-4), ("E", 1e-4))}


def tiny_config(manifest: Path, out: Path, steps: int = 6, params: dict | None = None, **data) -> dict:
    return {
        "model": {"name": "hagan", "params": {**TINY, **(params or {})}},
        "data": {"manifest": str(manifest), **data},
        "optim": json.loads(json.dumps(OPTIM)),
        "train": {"steps": steps, "batch_size": 4, "log_every": 2, "checkpoint_every": 3, "progress": False},
        "out": str(out),
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def random_pair(model, n: int = 2, shape=(16, 16, 16)) -> torch.Tensor:
    return model.codec.encode(torch.rand(n, 1, *shape) * 2 - 1, torch.randint(0, 3, (n, *shape)))


# --- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,shape", [("hagan_32", (32, 32, 32)), ("hagan_64", (64, 64, 64)),
                                          ("hagan_128", (128, 128, 128)), ("hagan_256", (256, 256, 256)),
                                          ("hagan_128", (128, 128, 64)), ("hagan_128_zconcat", (128, 128, 64))])
def test_preset_shapes_on_the_meta_device(preset, shape):
    params = read_yaml(CONFIGS / f"{preset}.yaml")["model"]["params"]
    with torch.device("meta"):  # full-size networks without allocating their weights
        model = build_model("hagan", params, DataInfo(shape, 1, 3))
        net = model.codec.network_shape(shape)
        low = tuple(s // 4 for s in net)
        slab = params["slab_depth"]
        gen, disc = model.nets["G"], model.nets["D"]
        a = gen.features(torch.zeros(2, params["latent_dim"]))
        fake_low, fake_slab = gen.render_low(a), gen.render_slab(a, 1, slab // 4)
        o_low, o_high = disc(fake_low, fake_slab, 4)
        z = model.nets["E"](torch.zeros(2, model.codec.channels, *net))
    channels = model.codec.channels
    assert a.shape == (2, params["feature_channels"], *low)
    assert fake_low.shape == (2, channels, *low)
    assert fake_slab.shape == (2, channels, slab, *net[1:])
    assert o_low["score"].shape == o_high["score"].shape == (2, 1)
    assert z.shape == (2, params["latent_dim"])


def test_sampling_gives_pairs_of_the_data_shape_and_is_seeded():
    model = build_model("hagan", TINY, DataInfo((16, 32, 16), 1, 3))
    images, masks = model.sample(3, seed=1, batch_size=2)
    assert images.shape == (3, 1, 16, 32, 16) and masks.shape == (3, 16, 32, 16) and masks.dtype == torch.int64
    assert images.abs().max() <= 1 and masks.max() <= 2
    again, _ = model.sample(3, seed=1, batch_size=3)
    assert torch.allclose(images, again, atol=1e-4)  # batch size changes only float rounding
    assert not torch.allclose(images, model.sample(3, seed=2)[0])


@pytest.mark.parametrize("shape", [(18, 16, 16), (16, 16, 12), (16, 16, 4)])
def test_unsupported_shapes_are_user_errors(shape):
    with pytest.raises(UserError, match=rf"data shape \[{shape[0]}, 16, {shape[2]}\] is not supported by hagan: "
                                        "every side must be divisible by 4, the smallest a power of two >= 16"):
        build_model("hagan", TINY, DataInfo(shape, 1, 2))


def test_2d_data_and_a_zconcat_shape_are_user_errors():
    with pytest.raises(UserError, match=r"'hagan' generates 3D volumes .* shape \[32, 32\] \(2 spatial axes\)"):
        build_model("hagan", TINY, DataInfo((32, 32), 1, 2))
    zconcat = {**TINY, "pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}
    with pytest.raises(UserError, match=r"\[16, 16, 6\] \(the network tensor \[16, 16, 12\] of pairing.layout 'zconcat'\)"):
        build_model("hagan", zconcat, DataInfo((16, 16, 6), 1, 2))


def test_bad_slab_depth_and_unknown_keys_are_refused():
    with pytest.raises(UserError, match="model.params.slab_depth: 6 must be a multiple of 4"):
        build_model("hagan", {**TINY, "slab_depth": 6}, DataInfo((16, 16, 16), 1, 2))
    with pytest.raises(UserError, match="model.params.slab_depth: 32 must be .* at most the volume's depth 16"):
        build_model("hagan", {**TINY, "slab_depth": 32}, DataInfo((16, 16, 16), 1, 2))
    with pytest.raises(UserError, match="model.params.slab: unknown key"):
        build_model("hagan", {**TINY, "slab": 8}, DataInfo((16, 16, 16), 1, 2))


# --- seam-free assembly ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape,slab_depth", [((32, 16, 16), 8), ((32, 16, 16), 12), ((16, 16, 16), 4)])
def test_assembled_volume_equals_a_full_resolution_pass(shape, slab_depth):
    torch.manual_seed(0)
    model = build_model("hagan", {**TINY, "slab_depth": slab_depth}, DataInfo(shape, 1, 3))
    gen = model.nets["G"].eval()
    with torch.no_grad():
        a = gen.features(torch.randn(2, 16))
        full, assembled = gen.render_full(a), gen.assemble(a, model.slab)
    assert assembled.shape == full.shape
    assert torch.allclose(assembled, full, atol=1e-5), (assembled - full).abs().max()


def test_without_the_halo_the_slabs_would_show_seams(monkeypatch):
    torch.manual_seed(0)
    model = build_model("hagan", {**TINY, "slab_depth": 8}, DataInfo((32, 16, 16), 1, 3))
    gen = model.nets["G"].eval()
    with torch.no_grad():
        a = gen.features(torch.randn(2, 16))
        full = gen.render_full(a)
        monkeypatch.setattr(hagan, "HALO", 0)
        seamy = gen.assemble(a, model.slab)
    assert (seamy - full).abs().max() > 1e-3  # so the equality above is not trivially true


def test_minibatch_stddev_is_the_spread_within_each_group():
    same = torch.ones(4, 3, 2, 2, 2)
    assert torch.allclose(minibatch_stddev(same), torch.full((4, 1), 1e-4))
    spread = torch.tensor([0.0, 2.0, 0.0, 2.0]).view(4, 1, 1, 1, 1).expand(4, 3, 2, 2, 2)
    assert torch.allclose(minibatch_stddev(spread), torch.ones(4, 1))
    # batch 8 = two groups of 4 (samples i and i + 2, i + 4, i + 6): group 0 constant, group 1 spread
    eight = torch.tensor([5.0, 0.0, 5.0, 2.0, 5.0, 0.0, 5.0, 2.0]).view(8, 1, 1, 1, 1)
    assert torch.allclose(minibatch_stddev(eight).squeeze(1), torch.tensor([0.0, 1.0] * 4), atol=1e-3)


def test_discriminator_options_change_its_layers():
    plain = build_model("hagan", {**TINY, "d_min_layers": 0}, DataInfo((16, 16, 16), 1, 3)).nets["D"]
    assert len(plain.low.features) == 0  # the 4^3 low-resolution volume: a linear classifier
    assert plain.low.heads["score"].in_features == 4 * 4**3  # image + 3 one-hot channels
    model = build_model("hagan", {**TINY, "d_min_layers": 2, "minibatch_std": True}, DataInfo((16, 16, 16), 1, 3))
    disc = model.nets["D"]
    assert sum(isinstance(m, torch.nn.Conv3d) for m in disc.low.features.modules()) == 2
    assert disc.low.heads["score"].in_features == 8 * 4**3 + 1  # d_channels 4 then 8, plus the batch spread
    real = random_pair(model, n=4)
    assert torch.isfinite(model.accumulate_gradients("D", real)["loss/D"])


def test_truncation_and_given_masks_are_refused():
    model = build_model("hagan", TINY, DataInfo((16, 16, 16), 1, 2))
    with pytest.raises(UserError, match="no truncation"):
        model.sample(1, seed=0, truncation=0.7)
    with pytest.raises(UserError, match="does not render images for given masks"):
        model.sample(1, seed=0, masks=torch.zeros(1, 16, 16, 16, dtype=torch.long))


# --- training -------------------------------------------------------------------------------------
def test_tiny_training_run_has_finite_losses_and_checkpoints(toy_prepared, tmp_path):
    run = train(resolve_config(tiny_config(toy_prepared, tmp_path / "run")))
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    keys = {"loss/D", "loss/D_low", "loss/D_high", "loss/G", "loss/E_recon_h", "loss/E_recon_g"}
    assert keys <= set(records[-1])
    assert all(math.isfinite(r[k]) for r in records for k in keys)
    state = torch.load(list_checkpoints(run)[-1], weights_only=True)
    assert {k.split(".")[0] for k in state["nets"]} == {"G", "D", "E"}


@pytest.mark.slow
def test_resume_continues_exactly(toy_prepared, tmp_path):
    straight = train(resolve_config(tiny_config(toy_prepared, tmp_path / "straight", steps=6)))
    first = tiny_config(toy_prepared, tmp_path / "resumed", steps=4)
    first["train"]["checkpoint_every"] = 2
    train(resolve_config(first))
    resumed = train(resolve_config(first, ["train.steps=6"]), resume=True)
    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    keys = ["step", "loss/D", "loss/G", "loss/E_recon_h", "loss/E_recon_g"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    final_a = torch.load(list_checkpoints(straight)[-1], weights_only=True)
    final_b = torch.load(list_checkpoints(resumed)[-1], weights_only=True)
    for name, tensor in {**final_a["nets"], **final_a["G_ema"]}.items():
        other = final_b["nets"].get(name, final_b["G_ema"].get(name))
        assert torch.equal(tensor, other), name


def test_g_steps_updates_the_generator_several_times_per_step(toy_prepared, tmp_path):
    config = tiny_config(toy_prepared, tmp_path / "run", steps=3, params={"g_steps": 2})
    config["train"]["log_every"] = 3
    run = train(resolve_config(config))
    state = torch.load(list_checkpoints(run)[-1], weights_only=True)
    steps = {name: {int(s["step"]) for s in opt["state"].values()} for name, opt in state["optimizers"].items()}
    assert steps == {"D": {3}, "G": {6}, "E": {3}}


def test_zconcat_layout_trains(toy_prepared, tmp_path):
    params = {"pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}
    run = train(resolve_config(tiny_config(toy_prepared, tmp_path / "z", steps=2, params=params)))
    assert math.isfinite(read_jsonl(run / "metrics.jsonl")[-1]["loss/G"])


def test_class_key_is_checked_against_the_model(toy_prepared, tmp_path):
    with pytest.raises(UserError, match="not conditional"):
        train(resolve_config(tiny_config(toy_prepared, tmp_path / "a", class_key="source")))
    with pytest.raises(UserError, match="is conditional"):
        train(resolve_config(tiny_config(toy_prepared, tmp_path / "b", params={"num_classes": 2})))
    with pytest.raises(UserError, match="num_classes is 2 but"):
        train(resolve_config(tiny_config(toy_prepared, tmp_path / "c", params={"num_classes": 2}, class_key="source")))
    with pytest.raises(UserError, match="no case .* has a value for 'diagnosis'"):
        train(resolve_config(tiny_config(toy_prepared, tmp_path / "d", params={"num_classes": 2}, class_key="diagnosis")))


# --- learning -------------------------------------------------------------------------------------
def _two_class_dataset(tmp_path: Path) -> Path:
    """Toy spheres, half darkened (class "dark"), the rest "bright"; three cases carry no class."""
    from synthmed.data.manifest import load_manifest
    from synthmed.data.prepare import PrepareOptions, prepare_dataset
    from synthmed.data.toy import write_toy_dataset

    raw = write_toy_dataset(tmp_path / "raw", n_cases=20, shape=(16, 16, 16), seed=3)
    options = PrepareOptions(shape=(16, 16, 16), test_fraction=0.1, val_fraction=0.0, folds=0, margin=0)
    manifest = load_manifest(prepare_dataset([raw], tmp_path / "prepared", options, progress=False))
    data = json.loads(manifest.path.read_text())
    for i, case in enumerate(data["cases"]):
        path = manifest.cache_path(case["id"])
        with np.load(path) as z:
            image, mask = z["image"], z["mask"]
        if i % 2:
            image = np.where(mask[None] > 0, image - 1.0, image).astype(np.float32)  # sphere +0.5 -> -0.5
        np.savez(path, image=image, mask=mask)
        if i >= 3:
            case["brightness"] = "dark" if i % 2 else "bright"
    manifest.path.write_text(json.dumps(data))
    return manifest.root


def _inside_mean(images: torch.Tensor, masks: torch.Tensor) -> float:
    inside = masks > 0
    return float(images[:, 0][inside].mean()) if inside.any() else float("nan")


def test_conditional_training_with_partly_unlabelled_cases(tmp_path):
    from synthmed.data.manifest import load_manifest
    from synthmed.sample.sampler import sample_to_folder
    from synthmed.train.checkpoint import load_generator
    from synthmed.train.loop import case_classes

    root = _two_class_dataset(tmp_path)
    manifest = load_manifest(root)
    ids = manifest.split_ids("train")
    names, labels = case_classes(manifest, ids, "brightness", None)
    expected = [-1 if manifest.case(i).get("brightness") is None else names.index(manifest.case(i)["brightness"]) for i in ids]
    assert names == ["bright", "dark"] and labels.tolist() == expected and -1 in expected
    with pytest.raises(UserError, match=r"values \['dark'\] not in the classes"):
        case_classes(manifest, ids, "brightness", ["bright"])

    config = tiny_config(root, tmp_path / "run", steps=4, params={"num_classes": 2}, class_key="brightness")
    run = train(resolve_config(config))
    record = read_jsonl(run / "metrics.jsonl")[-1]
    assert math.isfinite(record["loss/D_class"]) and math.isfinite(record["loss/G_class"])
    model, state = load_generator(run)
    assert state["data"]["classes"] == ["bright", "dark"]
    images, masks = model.sample(3, seed=0, classes=[1, 0, 1])
    assert images.shape == (3, 1, 16, 16, 16)
    with pytest.raises(UserError, match="classes must be 2 indices"):
        model.sample(2, seed=0, classes=[0, 2])

    out = sample_to_folder(run, 2, tmp_path / "dark", class_name="dark")
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["class"] == "dark"
    with pytest.raises(UserError, match=r"--class 'grey': not one of this model's classes \['bright', 'dark'\]"):
        sample_to_folder(run, 2, tmp_path / "grey", class_name="grey")
    assert not (tmp_path / "grey").exists()


def test_class_option_is_refused_by_an_unconditional_model(tmp_path):
    model = build_model("hagan", {"latent_dim": 8, "feature_channels": 8, "g_max_channels": 8, "d_channels": 4,
                                  "d_max_channels": 8}, DataInfo(shape=(16, 16, 16), image_channels=1, num_labels=2))
    with pytest.raises(UserError, match="not class-conditional"):
        model.sample(2, seed=0, classes=[0, 0])
