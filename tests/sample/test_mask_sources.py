"""Deformed training masks: the mask source of a mask-conditional generator sampled without --masks."""

import json

import numpy as np
import pytest

from synthmed.cli import main
from synthmed.errors import UserError
from synthmed.sample.mask_sources import (
    SOURCE_KIND,
    Deformation,
    deform_keeping_labels,
    deform_mask,
    deformed_training_masks,
    labels_kept,
)
from synthmed.sample.sampler import sample_to_folder
from synthmed.sample.synthetic_set import load_synthetic_set
from synthmed.train.checkpoint import load_generator
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

TINY = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16, "augment": {"mode": "none"}}


def nested_discs(shape: tuple[int, ...], centre: tuple[float, ...], radii=(7, 3)) -> np.ndarray:
    """Label 1: a disc (ball) of radius radii[0]; label 2: a concentric one of radius radii[1] inside it."""
    grid = np.indices(shape)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    mask = np.zeros(shape, np.int64)
    mask[distance < radii[0]] = 1
    mask[distance < radii[1]] = 2
    return mask


@pytest.mark.parametrize("shape", [(32, 32), (24, 24, 24)])
def test_deformation_keeps_shape_and_labels_and_changes_the_mask(shape):
    source = nested_discs(shape, tuple(s / 2 for s in shape))
    for index in range(4):
        mask, record = deform_keeping_labels(source, Deformation(), seed=0, index=index)
        assert mask.shape == source.shape and mask.dtype == np.int64
        assert set(np.unique(mask)) == {0, 1, 2}
        for label in (1, 2):
            assert (mask == label).sum() >= 0.5 * (source == label).sum()
        assert record["strength"] == 1.0 and not np.array_equal(mask, source)


def test_the_check_knows_a_lost_label_and_a_new_border_contact():
    source = nested_discs((32, 32), (16, 16))
    assert labels_kept(source, source)
    shrunk = source.copy()
    shrunk[source == 1] = 0  # label 1 gone
    assert not labels_kept(source, shrunk)
    shifted = np.roll(source, 12, axis=1)  # the disc (radius 7) now reaches the right border, which it did not
    assert not labels_kept(source, shifted)
    touching = np.roll(source, 10, axis=1)  # a source that touches the border may keep touching it
    assert labels_kept(touching, touching)


def test_masks_near_the_border_never_lose_a_label_there():
    source = nested_discs((32, 32), (16, 25), radii=(6, 2))  # label 1 ends one pixel from the right border
    for index in range(12):
        mask, _ = deform_keeping_labels(source, Deformation(), seed=5, index=index)
        assert not mask[:, -1].any() and not mask[:, 0].any() and not mask[0].any() and not mask[-1].any()
        assert (mask == 2).sum() >= 0.5 * (source == 2).sum() and (mask == 1).sum() >= 0.5 * (source == 1).sum()


def test_a_mask_no_deformation_can_keep_is_left_as_it_is():
    frame = np.zeros((32, 32), np.int64)
    frame[1:-1, 1:-1] = 1
    frame[2:-2, 2:-2] = 0  # a one-pixel ring one pixel from every border
    wild = Deformation(rotate_deg=45, scale=0.5, elastic=0.3)
    mask, record = deform_keeping_labels(frame, wild, seed=0, index=0)
    assert record == {"deformation_seed": None, "strength": 0.0} and np.array_equal(mask, frame)


def test_deformations_are_seeded_per_mask():
    source = nested_discs((32, 32), (16, 16))
    assert np.array_equal(deform_mask(source, Deformation(), 7), deform_mask(source, Deformation(), 7))
    assert not np.array_equal(deform_mask(source, Deformation(), 7), deform_mask(source, Deformation(), 8))


def _csg_run(manifest, out):
    return train(resolve_config({
        "model": {"name": "stylegan2", "params": {**TINY, "variant": "C-SG"}},
        "data": {"manifest": str(manifest)},
        "optim": {"G": {"lr": 0.002, "betas": [0.0, 0.99]}, "D": {"lr": 0.002, "betas": [0.0, 0.99]}},
        "train": {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "progress": False},
        "out": str(out),
    }))


@pytest.fixture(scope="module")
def csg(tmp_path_factory):
    from synthmed.data.toy2d import prepare_toy_2d

    root = tmp_path_factory.mktemp("csg")
    manifest = prepare_toy_2d(root / "toy2d", n=24, size=32)
    return {"manifest": manifest, "run": _csg_run(manifest, root / "run")}


def test_training_masks_are_chosen_and_deformed_by_the_seed_alone(csg):
    _, state = load_generator(csg["run"])
    data = state["data"]
    masks, record = deformed_training_masks(data, 20, seed=3)
    again, _ = deformed_training_masks(data, 20, seed=3)
    fewer, fewer_record = deformed_training_masks(data, 6, seed=3)
    other, _ = deformed_training_masks(data, 20, seed=4)
    assert masks.shape == (20, 32, 32) and np.array_equal(masks, again)
    assert np.array_equal(fewer, masks[:6]) and fewer_record["pairs"] == record["pairs"][:6]  # independent of n
    assert not np.array_equal(masks, other)
    cases = [p["case"] for p in record["pairs"]]
    assert sorted(cases[:17]) == sorted(data["trained_on"])  # every one of the 17 training masks, then again
    assert cases[17:] == cases[:3]


def test_sample_without_masks_renders_deformed_training_masks(csg, tmp_path):
    out = tmp_path / "syn"
    assert main(["sample", "--checkpoint", str(csg["run"]), "-n", "5", "--out", str(out), "--seed", "2",
                 "--batch-size", "2"]) == 0
    card = json.loads((out / "card.json").read_text())
    source = card["config"]["masks"]
    assert source["kind"] == SOURCE_KIND and len(source["pairs"]) == 5
    _, state = load_generator(csg["run"])
    assert all(p["case"] in state["data"]["trained_on"] and p["deformation_seed"] is not None for p in source["pairs"])
    assert card["trained_on_case_ids"] == state["data"]["trained_on"]
    images, masks, _ = load_synthetic_set(out, (32, 32))
    expected, _ = deformed_training_masks(state["data"], 5, seed=2)
    assert np.array_equal(masks, expected)
    big_batch = sample_to_folder(csg["run"], 5, tmp_path / "big", seed=2, batch_size=5)
    images_2, masks_2, _ = load_synthetic_set(big_batch, (32, 32))
    assert np.array_equal(masks_2, masks) and np.allclose(images_2, images, atol=1)  # batch size changes nothing


def test_undeformed_training_masks_with_strength_zero(csg, tmp_path):
    out = sample_to_folder(csg["run"], 3, tmp_path / "plain", seed=0, deform_strength=0.0)
    _, masks, _ = load_synthetic_set(out, (32, 32))
    pairs = json.loads((out / "card.json").read_text())["config"]["masks"]["pairs"]
    from synthmed.data.dataset import load_case_arrays
    from synthmed.data.manifest import load_manifest

    manifest = load_manifest(csg["manifest"])
    for mask, pair in zip(masks, pairs):
        assert np.array_equal(mask, load_case_arrays(manifest, pair["case"])[1])
    with pytest.raises(UserError, match="--deform-strength must be at least 0"):
        sample_to_folder(csg["run"], 3, tmp_path / "negative", deform_strength=-1.0)


def test_a_changed_manifest_is_refused(csg, tmp_path):
    manifest = csg["manifest"]
    original = manifest.read_bytes()
    try:
        manifest.write_bytes(original + b"\n")
        with pytest.raises(UserError, match=r"manifest\.json: the manifest changed .* pass --masks DIR"):
            sample_to_folder(csg["run"], 2, tmp_path / "refused")
    finally:
        manifest.write_bytes(original)
    assert not (tmp_path / "refused").exists()
