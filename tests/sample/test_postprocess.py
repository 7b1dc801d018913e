import numpy as np
import pytest

from synthmed.errors import UserError
from synthmed.sample.postprocess import (
    clean_mask,
    images_to_network_units,
    images_to_original_units,
    intensity_range,
)

WINDOW = {"mode": "window", "lo": -1024.0, "hi": 600.0}
PERCENTILE = {"mode": "percentile", "lower_pct": 0.5, "upper_pct": 99.5, "reference_lo": 12.5, "reference_hi": 2113.0}


@pytest.mark.parametrize("intensity", [WINDOW, PERCENTILE])
def test_intensity_round_trip(intensity):
    lo, hi = intensity_range(intensity)
    rng = np.random.default_rng(0)
    original = rng.uniform(lo, hi, size=(2, 1, 4, 5, 6)).astype(np.float32)
    network = images_to_network_units(original, intensity)
    assert network.min() >= -1 and network.max() <= 1
    back = images_to_original_units(network, intensity)
    assert back.dtype == np.float32 and back.shape == original.shape
    np.testing.assert_allclose(back, original, rtol=1e-4, atol=1e-4 * (hi - lo))


def test_intensity_endpoints_and_clipping():
    out = images_to_original_units(np.array([-1.0, 0.0, 1.0, -3.0, 7.0]), WINDOW)
    np.testing.assert_allclose(out, [-1024, -212, 600, -1024, 600])
    # percentile mode uses the reference (median per-case) range
    np.testing.assert_allclose(images_to_original_units(np.array([-1.0, 1.0]), PERCENTILE), [12.5, 2113.0])


@pytest.mark.parametrize(
    "bad, word",
    [({"mode": "zscore"}, "mode"), ({"mode": "window", "lo": 0}, "hi"), ({"mode": "window", "lo": 5, "hi": 5}, "greater")],
)
def test_bad_intensity(bad, word):
    with pytest.raises(UserError, match=word):
        images_to_original_units(np.zeros(3), bad)


def _two_blob_mask():
    mask = np.zeros((12, 12, 12), dtype=np.int64)
    mask[1:5, 1:5, 1:5] = 1  # 64 voxels, label 1
    mask[9, 9, 8:11] = 1  # 3-voxel blob, label 1
    mask[6:10, 1:4, 1:3] = 2  # 24 voxels, label 2
    mask[1, 10, 10] = 2  # 1-voxel blob, label 2
    return mask


def test_clean_mask_min_size_removes_small_blob():
    mask = _two_blob_mask()
    out = clean_mask(mask, min_size=5)
    assert out.dtype == mask.dtype
    assert (out == 1).sum() == 64 and (out == 2).sum() == 24
    assert out[9, 9, 9] == 0 and out[1, 10, 10] == 0
    # everything kept keeps its label; nothing gets a new label
    kept = out > 0
    np.testing.assert_array_equal(out[kept], mask[kept])
    assert set(np.unique(out)) == {0, 1, 2}


def test_clean_mask_keep_largest_per_label():
    mask = _two_blob_mask()
    mask[1:5, 7:12, 1:5] = 1  # a second large label-1 blob (80 voxels), the largest
    out = clean_mask(mask, keep_largest=True)
    assert (out == 1).sum() == 80 and out[2, 2, 2] == 0
    assert (out == 2).sum() == 24  # label 2 keeps its own largest


def test_clean_mask_noop_and_errors():
    mask = _two_blob_mask()
    np.testing.assert_array_equal(clean_mask(mask), mask)
    with pytest.raises(UserError, match="integer"):
        clean_mask(mask.astype(np.float32), min_size=2)
