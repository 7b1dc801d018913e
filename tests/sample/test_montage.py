import matplotlib.image as mpimg
import numpy as np
import pytest

from synthmed.errors import UserError
from synthmed.sample.montage import central_slice, save_montage


def _set(n, seed, shape=(10, 12, 8)):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, size=(n, 1, *shape)).astype(np.float32)
    masks = np.zeros((n, *shape), dtype=np.int64)
    masks[:, 3:7, 3:8, 5:7] = 1
    masks[:, 6:8, 4:6, 5:7] = 2
    return images, masks


def test_central_slice_goes_through_mask_centroid():
    image = np.arange(4 * 5 * 9, dtype=np.float32).reshape(4, 5, 9)
    mask = np.zeros_like(image, dtype=np.int64)
    mask[1:3, 1:3, 6:8] = 1  # centroid 6.5 -> slice 6 (round half to even) or 7
    image_slice, mask_slice = central_slice(image, mask)
    assert image_slice.shape == (4, 5) and mask_slice.any()
    empty_slice, _ = central_slice(image, np.zeros_like(mask))
    np.testing.assert_array_equal(empty_slice, image[..., 4])


def test_montage_written_and_grows_with_rows(tmp_path):
    real, synthetic = _set(4, 0), _set(8, 1)
    one = save_montage(tmp_path / "one.png", [("real", *real)], n_cols=6)
    two = save_montage(
        tmp_path / "plots" / "two.png",
        [("real", *real), ("synthetic", *synthetic)],
        n_cols=6,
        labels={"0": "background", "1": "anterior", "2": "posterior"},
    )
    assert one.stat().st_size > 5_000 and two.stat().st_size > one.stat().st_size
    a, b = mpimg.imread(one), mpimg.imread(two)
    assert b.shape[0] > 1.5 * a.shape[0] and b.shape[1] == a.shape[1]
    assert a.std() > 0.05  # not a blank canvas
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["two.png"]  # no temp file left


def test_montage_accepts_empty_masks_and_2d(tmp_path):
    images, masks = _set(2, 0)
    save_montage(tmp_path / "empty.png", [("synthetic", images, np.zeros_like(masks))])
    save_montage(tmp_path / "2d.png", [("real", images[:, :, :, :, 0], masks[..., 0])], n_cols=3)
    assert (tmp_path / "empty.png").exists() and (tmp_path / "2d.png").exists()


def test_montage_bad_input(tmp_path):
    images, masks = _set(2, 0)
    with pytest.raises(UserError, match="'real'"):
        save_montage(tmp_path / "x.png", [("real", images, masks[:, :5])])
    with pytest.raises(UserError, match="no rows"):
        save_montage(tmp_path / "x.png", [])
    assert not (tmp_path / "x.png").exists()
