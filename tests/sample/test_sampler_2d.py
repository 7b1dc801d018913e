"""2D sampling: PNG sets from a checkpoint, truncation, C-SG on given masks, and the MC-SG chain."""

import json

import numpy as np
import pytest
from PIL import Image

from synthmed.cli import main
from synthmed.errors import UserError
from synthmed.sample.synthetic_set import load_masks, load_synthetic_set
from synthmed.sample.sampler import sample_to_folder
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

TINY = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16, "augment": {"mode": "none"}}


def _run(manifest, out, variant):
    config = resolve_config({
        "model": {"name": "stylegan2", "params": {**TINY, "variant": variant}},
        "data": {"manifest": str(manifest)},
        "optim": {"G": {"lr": 0.002, "betas": [0.0, 0.99]}, "D": {"lr": 0.002, "betas": [0.0, 0.99]}},
        "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "progress": False},
        "out": str(out),
    })
    return train(config)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from synthmed.data.toy2d import prepare_toy_2d

    root = tmp_path_factory.mktemp("sg2")
    manifest = prepare_toy_2d(root / "toy2d", n=24, size=32)
    return {"manifest": manifest, **{v: _run(manifest, root / v, v) for v in ("B-SG", "M-SG", "C-SG")}}


def test_paired_generator_writes_png_pairs_and_truncation_changes_them(runs, tmp_path):
    plain = sample_to_folder(runs["B-SG"], 3, tmp_path / "plain", seed=1)
    truncated = sample_to_folder(runs["B-SG"], 3, tmp_path / "trunc", seed=1, truncation=0.0)
    images, masks, _ = load_synthetic_set(plain, (32, 32))
    assert images.shape == (3, 1, 32, 32) and masks.shape == (3, 32, 32)
    assert 0 <= images.min() and images.max() <= 255  # the 8-bit window of the toy PNGs
    flat, _, _ = load_synthetic_set(truncated, (32, 32))
    assert not np.array_equal(flat, images)
    assert np.abs(flat - flat[:1]).max() < np.abs(images - images[:1]).max()  # psi 0: every sample at w_avg
    assert json.loads((truncated / "card.json").read_text())["config"]["truncation"] == 0.0


def test_mask_only_generator_then_conditional_generator_on_its_masks(runs, tmp_path):
    masks_dir = sample_to_folder(runs["M-SG"], 4, tmp_path / "msg", seed=2)
    assert not list((masks_dir / "imagesTr").iterdir())
    given, _ = load_masks(masks_dir, (32, 32), num_labels=2)
    out = sample_to_folder(runs["C-SG"], None, tmp_path / "csg", seed=3, masks_dir=masks_dir)
    _, written, _ = load_synthetic_set(out, (32, 32))
    assert np.array_equal(written, given)  # C-SG keeps the masks it was given
    card = json.loads((out / "card.json").read_text())
    assert card["count"] == 4 and card["config"]["masks"]["folder"] == str(masks_dir.resolve())


def test_mc_sg_chain_records_both_generators(runs, tmp_path):
    assert main(["sample", "--checkpoint", str(runs["C-SG"]), "--mask-checkpoint", str(runs["M-SG"]), "-n", "3",
                 "--out", str(tmp_path / "mcsg"), "--seed", "4"]) == 0
    card = json.loads((tmp_path / "mcsg" / "card.json").read_text())
    assert card["config"]["masks"]["model"] == "stylegan2"
    assert card["config"]["masks"]["checkpoint"]["sha256"]
    images, _, _ = load_synthetic_set(tmp_path / "mcsg", (32, 32))
    assert images.shape == (3, 1, 32, 32)


def test_conditional_generator_without_masks_and_options_a_model_lacks_are_refused(runs, tmp_path):
    # (C-SG without masks now renders for its deformed training masks: tests/sample/test_mask_sources.py)
    with pytest.raises(UserError, match="--deform-strength"):
        sample_to_folder(runs["B-SG"], 2, tmp_path / "a", deform_strength=0.5)
    with pytest.raises(UserError, match="does not render images for given masks"):
        sample_to_folder(runs["B-SG"], 2, tmp_path / "b", masks_dir=runs["C-SG"])  # not read: refused first
    folder = tmp_path / "given"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "wrong_size.png")
    with pytest.raises(UserError, match="wrong_size.png"):
        sample_to_folder(runs["C-SG"], None, tmp_path / "c", masks_dir=folder)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
