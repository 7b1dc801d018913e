"""Preprocessing on volumes whose answer is known by hand."""

import numpy as np
import pytest

from synthmed.data.preprocess import affine_spacing, intensity_to_original, intensity_to_unit, preprocess_case


def _run(image, mask, affine, **kw):
    args = dict(spacing=None, shape=image.shape, margin=100, intensity_mode="window", window=(-1024, 600))
    args.update(kw)
    return preprocess_case(image, mask, affine, **args)


def test_spacing_1mm_to_2mm_halves_shape_and_doubles_affine_diagonal():
    image = np.linspace(-1000, 500, 16**3, dtype=np.float32).reshape(16, 16, 16)
    mask = np.ones((16, 16, 16), np.int64)  # foreground everywhere: the crop keeps the whole volume
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    out = _run(image, mask, affine, spacing=(2.0, 2.0, 2.0), shape=(8, 8, 8))
    assert out.image.shape == (1, 8, 8, 8) and out.mask.shape == (8, 8, 8)
    np.testing.assert_allclose(np.diag(out.affine)[:3], [2.0, 2.0, 2.0], atol=1e-6)
    assert out.spacing == pytest.approx([2.0, 2.0, 2.0])
    assert out.foreground_lost_voxels == 0


def test_resize_mode_changes_spacing_in_affine():
    image = np.zeros((16, 16, 16), np.float32)
    mask = np.ones((16, 16, 16), np.int64)
    out = _run(image, mask, np.diag([1.5, 1.5, 1.5, 1.0]), shape=(8, 8, 8), shape_mode="resize")
    assert out.image.shape == (1, 8, 8, 8)
    assert out.spacing == pytest.approx([3.0, 3.0, 3.0])


def test_intensity_mapping_is_invertible_inside_window_and_clips_outside():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1024, 600, size=1000)
    y = intensity_to_unit(x, -1024, 600)
    assert y.dtype == np.float32 and y.min() >= -1 and y.max() <= 1
    np.testing.assert_allclose(intensity_to_original(y, -1024, 600), x, atol=1e-3 * 1624)
    assert intensity_to_unit(np.array([-3000.0, 3000.0]), -1024, 600).tolist() == [-1.0, 1.0]
    assert intensity_to_original(np.array([-1.0, 0.0, 1.0]), -1024, 600).tolist() == [-1024, -212, 600]


def test_percentile_mode_stores_case_range():
    rng = np.random.default_rng(0)
    image = rng.uniform(112, 1.7e6, size=(16, 16, 16)).astype(np.float32)
    out = _run(image, np.ones_like(image, dtype=np.int64), np.eye(4), intensity_mode="percentile",
               percentiles=(0.5, 99.5))
    assert out.lo == pytest.approx(np.percentile(image, 0.5))
    assert out.hi == pytest.approx(np.percentile(image, 99.5))
    assert out.image.min() == -1.0 and out.image.max() == 1.0


def test_mask_values_preserved_and_integer():
    mask = np.zeros((16, 16, 16), np.int64)
    mask[2:6, 2:6, 2:6] = 1
    mask[8:12, 8:12, 8:12] = 2
    mask[3, 12, 3] = 7
    out = _run(np.zeros(mask.shape, np.float32), mask, np.eye(4))
    assert out.mask.dtype == np.uint8
    assert sorted(np.unique(out.mask).tolist()) == [0, 1, 2, 7]
    assert np.bincount(out.mask.ravel()).tolist()[1:3] == [64, 64]
    # nearest-neighbour resampling never invents a label in between
    out2 = _run(np.zeros(mask.shape, np.float32), mask, np.eye(4), spacing=(1.7, 1.3, 2.1))
    assert set(np.unique(out2.mask).tolist()) <= {0, 1, 2, 7}


def test_lps_volume_is_flipped_to_ras():
    image = np.zeros((16, 16, 16), np.float32)
    image[0, 0, 0] = 600  # marker in the first voxel
    mask = np.ones((16, 16, 16), np.int64)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS: i runs to the left, j to the back
    affine[:3, 3] = [10.0, 20.0, 30.0]
    out = _run(image, mask, affine)
    assert np.all(np.diag(out.affine)[:3] > 0)  # RAS now
    idx = np.unravel_index(np.argmax(out.image[0]), out.image.shape[1:])
    assert idx == (15, 15, 0)  # first two axes flipped, third unchanged
    world_before = affine @ [0, 0, 0, 1]
    world_after = out.affine @ [*idx, 1]
    np.testing.assert_allclose(world_after, world_before, atol=1e-5)  # same place in the world


def test_pad_value_is_mapped_background_and_crop_counts_lost_foreground():
    image = np.full((16, 16, 16), 600.0, np.float32)
    mask = np.zeros((16, 16, 16), np.int64)
    mask[4:12, 4:12, 4:12] = 1
    out = _run(image, mask, np.eye(4), shape=(20, 20, 20), margin=0)  # crop to 8³, pad to 20³
    assert out.image[0, 0, 0, 0] == -1.0 and out.image[0, 10, 10, 10] == 1.0
    assert out.mask.sum() == 8**3 and out.foreground_lost_voxels == 0
    out = _run(image, mask, np.eye(4), shape=(6, 8, 8), margin=0)  # cuts one slice on each side
    assert out.foreground_lost_voxels == 2 * 8 * 8
    assert out.mask.sum() == 8**3 - 2 * 8 * 8


def test_affine_spacing():
    assert affine_spacing(np.diag([-2.0, 1.0, 3.0, 1.0])) == [2.0, 1.0, 3.0]
