"""Masks and lists that used to be read silently: stray mask values, many-valued masks, rare undeclared labels."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
from PIL import Image

from synthmed.data.images2d import stray_values
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import make_options, prepare_dataset
from synthmed.data.toy2d import write_toy_2d_dataset
from synthmed.errors import UserError


def _noisy(mask01: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 0/255 mask with faint background values and grey edges, as a lossy save would leave."""
    out = mask01.astype(np.uint8) * 255
    edge = (np.abs(np.diff(mask01.astype(int), axis=0, prepend=0)) > 0)
    out[edge] = rng.integers(60, 200, edge.sum())
    faint = rng.random(out.shape) < 0.01
    out[faint & (out == 0)] = rng.integers(1, 6, (faint & (out == 0)).sum())
    return out


def test_stray_values_are_told_from_labels():
    rng = np.random.default_rng(0)
    disc = np.zeros((32, 32), bool)
    disc[8:20, 8:20] = True
    assert "distinct values" in stray_values(_noisy(disc, rng))
    labels = np.zeros((32, 32), np.uint8)
    labels[:8], labels[8:16], labels[16:20], labels[20:22] = 1, 2, 3, 4  # five real classes, none >= 128
    assert stray_values(labels) is None and stray_values(disc.astype(np.uint8) * 255) is None
    many = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) % 12  # 12 values: more than a few labels
    assert stray_values(many) == "12 distinct values"


def test_tiff_masks_with_stray_values_are_refused_then_read_with_a_threshold(tmp_path):
    raw = write_toy_2d_dataset(tmp_path / "raw", n=12, size=32)
    rng = np.random.default_rng(1)
    for i in range(7):  # 7 of 12 masks become noisy TIFFs
        png = raw / "masks" / f"toy2d_{i:03d}.png"
        disc = np.asarray(Image.open(png)) > 0
        png.unlink()
        tifffile.imwrite(raw / "masks" / f"toy2d_{i:03d}.tif", _noisy(disc, rng))
    with pytest.raises(UserError) as err:
        prepare_dataset([raw], tmp_path / "out", make_options(folds=0), progress=False)
    text = str(err.value)
    assert "7 of 12 masks look like binary masks with stray values" in text and "toy2d_000.tif" in text
    assert "and 2 more" in text and "--mask-threshold T" in text and not (tmp_path / "out").exists()
    manifest = load_manifest(prepare_dataset([raw], tmp_path / "out", make_options(folds=0, mask_threshold=127),
                                             progress=False))
    assert manifest.labels == {0: "background", 1: "label_1"}
    assert manifest.preprocessing["masks"]["threshold"] == 127 and manifest.preprocessing["masks"]["rules"] == {"threshold": 12}


def test_mask_threshold_is_refused_for_volumes(toy_msd, tmp_path):
    with pytest.raises(UserError, match="--mask-threshold is for 2D masks"):
        prepare_dataset([toy_msd], tmp_path / "out", make_options(mask_threshold=0.5), progress=False)


def test_a_rare_undeclared_label_is_named(tmp_path, caplog):
    raw = write_toy_2d_dataset(tmp_path / "raw", n=12, size=32)
    path = raw / "masks" / "toy2d_003.png"
    mask = np.asarray(Image.open(path)) // 255  # 0/1 labels, stored as such (no 0/255 rule then)
    mask[0, :3] = 7  # three pixels of a value seen nowhere else
    Image.fromarray(mask.astype(np.uint8)).save(path)
    for i in range(12):
        if i != 3:
            p = raw / "masks" / f"toy2d_{i:03d}.png"
            Image.fromarray((np.asarray(Image.open(p)) // 255).astype(np.uint8)).save(p)
    with caplog.at_level(logging.WARNING):
        prepare_dataset([raw], tmp_path / "out", make_options(folds=0), progress=False)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "1 value(s) are rare enough to be noise: 7 (3 pixels in 1 of 12 cases: toy2d_003)" in warning
    assert "--labels" in warning and "1 (" not in warning.split("noise:")[1]


def test_16bit_masks_with_many_values_are_refused_then_read_with_a_threshold(tmp_path):
    raw = write_toy_2d_dataset(tmp_path / "raw", n=12, size=32)
    rng = np.random.default_rng(2)
    written = {}
    for png in sorted((raw / "masks").glob("*.png")):  # foreground 65535, its edge ramped over many greys
        disc = np.asarray(Image.open(png)) > 0
        data = disc.astype(np.uint16) * 65535
        edge = np.abs(np.diff(disc.astype(int), axis=1, prepend=0)) > 0
        data[edge] = rng.integers(1000, 65000, edge.sum())
        Image.fromarray(data).save(png)
        written[png.stem] = data
    with pytest.raises(UserError) as err:
        prepare_dataset([raw], tmp_path / "out", make_options(folds=0), progress=False)
    text = str(err.value)
    assert "toy2d_000.png: mask value 65" in text and "--mask-threshold T, e.g. 32767" in text
    manifest = load_manifest(prepare_dataset([raw], tmp_path / "out", make_options(folds=0, mask_threshold=32767),
                                             progress=False))
    assert manifest.labels == {0: "background", 1: "label_1"}
    case = manifest.cases[0]  # the 32x32 images are kept at their size: the labels are exactly value > T
    np.testing.assert_array_equal(np.load(manifest.root / case["cache"])["mask"], written[case["id"]] > 32767)


def test_jpeg_mask_threshold_replaces_127_and_accepts_grey_edges(tmp_path):
    raw = write_toy_2d_dataset(tmp_path / "raw", n=12, size=32)
    png = raw / "masks" / "toy2d_000.png"
    grey = (np.asarray(Image.open(png)) > 0).astype(np.uint8) * 150  # a grey disc: mid-grey everywhere on it
    png.unlink()
    Image.fromarray(grey).save(raw / "masks" / "toy2d_000.jpg", quality=100)
    with pytest.raises(UserError, match="toy2d_000.jpg: JPEG mask values do not cluster near 0 and 255"):
        prepare_dataset([raw], tmp_path / "out", make_options(folds=0), progress=False)
    manifest = load_manifest(prepare_dataset([raw], tmp_path / "out", make_options(folds=0, mask_threshold=100),
                                             progress=False))
    mask = np.load(manifest.root / manifest.case("toy2d_000")["cache"])["mask"]
    assert mask.sum() == (grey > 0).sum()  # 150 > 100 on the disc; 127 would have lost it all
    masks = manifest.preprocessing["masks"]
    assert masks["threshold"] == 100 and masks["jpeg_mask_pixels"] == 32 * 32 and masks["jpeg_midgrey_pixels"] > 0
