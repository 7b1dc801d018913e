"""Manifest contents, the manifest API, and the dataset readers."""

import json

import numpy as np
import pytest

import synthmed
from synthmed.data.dataset import load_arrays, load_case_arrays
from synthmed.data.manifest import TOP_LEVEL_KEYS, load_manifest
from synthmed.errors import UserError
from synthmed.fileio import sha256_file


def test_manifest_has_documented_keys(toy_prepared):
    data = json.loads(toy_prepared.read_text())
    assert tuple(data) == TOP_LEVEL_KEYS
    assert data["format"] == "synthmed-manifest" and data["format_version"] == 1
    assert data["synthmed_version"] == synthmed.__version__
    assert data["preprocessing"] == {
        "dims": 3, "orientation": "RAS", "spacing": None, "shape": [16, 16, 16], "shape_mode": "pad_crop", "crop": "foreground",
        "foreground_margin": 4, "modality": "CT", "intensity": {"mode": "window", "lo": -1024.0, "hi": 600.0},
    }
    case = data["cases"][0]
    assert set(case) == {
        "id", "source", "group", "image_file", "label_file", "original_shape", "original_spacing",
        "original_affine", "shape", "spacing", "affine", "intensity", "label_voxels",
        "foreground_lost_voxels", "fixes", "cache",
    }
    assert set(data["splits"]) == {
        "seed", "test_fraction", "val_fraction", "k_folds", "group_regex", "train", "val", "test", "folds",
    }
    assert data["sources"][0]["kind"] == "msd"


def test_manifest_api(toy_prepared):
    m = load_manifest(toy_prepared.parent)
    assert m.path == toy_prepared and m.root == toy_prepared.parent
    assert m.sha256 == sha256_file(toy_prepared)
    assert m.labels == {0: "background", 1: "sphere", 2: "core"}
    train, val, test = m.split_ids("train"), m.split_ids("val"), m.split_ids("test")
    assert sorted(m.split_ids("trainval")) == sorted(train + val)
    assert len(train) + len(val) + len(test) == 12
    for k in range(3):
        fold_train, fold_val = m.split_ids("train", fold=k), m.split_ids("train", fold=k, part="val")
        assert sorted(fold_train + fold_val) == sorted(train) and not set(fold_train) & set(fold_val)
    assert m.case(train[0])["id"] == train[0]
    with pytest.raises(UserError, match="unknown split 'validation'; valid splits: train, val, test, trainval"):
        m.split_ids("validation")
    with pytest.raises(UserError, match="fold 3 out of range"):
        m.split_ids("train", fold=3)
    with pytest.raises(UserError, match="no case with id 'nope'"):
        m.case("nope")


def test_load_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="manifest.json: manifest not found"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest.json: invalid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(UserError, match="manifest.json: not a synthmed manifest"):
        load_manifest(tmp_path / "manifest.json")


def test_prepared_case_arrays_shapes_and_dtypes(toy_prepared):
    m = load_manifest(toy_prepared)
    ids = m.split_ids("train")
    image, mask = load_case_arrays(m, ids[0])
    assert image.dtype == np.float32 and image.shape == (1, 16, 16, 16)
    assert mask.shape == (16, 16, 16)
    assert m.case(ids[0])["source"] == "toy"
    assert -1 <= image.min() and image.max() <= 1
    assert set(np.unique(mask).tolist()) == {0, 1, 2}
    images, masks = load_arrays(m, ids)
    assert images.dtype == np.float32 and images.shape == (len(ids), 1, 16, 16, 16)
    assert masks.dtype == np.int64 and masks.shape == (len(ids), 16, 16, 16)
    np.testing.assert_array_equal(masks[0], mask)
    np.testing.assert_array_equal(images[0], image)
    # cached arrays are stored as documented
    with np.load(m.cache_path(ids[0])) as z:
        assert z["image"].dtype == np.float32 and z["mask"].dtype == np.uint8
    # label_voxels agree with the cache
    counts = np.bincount(masks[0].ravel(), minlength=3)
    assert m.case(ids[0])["label_voxels"] == {"1": int(counts[1]), "2": int(counts[2])}


def test_dataset_unknown_id(toy_prepared):
    with pytest.raises(UserError, match="no case with id"):
        load_arrays(toy_prepared, ["nope"])


def test_toy_dataset_deterministic(tmp_path):
    from synthmed.data.toy import write_toy_dataset

    a = write_toy_dataset(tmp_path / "a", n_cases=2, layout="folders", seed=5)
    b = write_toy_dataset(tmp_path / "b", n_cases=2, layout="folders", seed=5)
    import nibabel as nib

    for sub in ("images", "labels"):
        x = np.asarray(nib.load(a / sub / "toy_001.nii.gz").dataobj)
        y = np.asarray(nib.load(b / sub / "toy_001.nii.gz").dataobj)
        np.testing.assert_array_equal(x, y)
