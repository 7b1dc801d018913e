"""`--crop foreground | nonzero | none` on volumes whose crop box is known by hand."""

import numpy as np
import pytest

from synthmed.cli import build_parser
from synthmed.data.preprocess import preprocess_case


def _volume():
    """Image nonzero in [2:14, 3:13, 4:12] (a body), mask in [6:9, 6:9, 6:9] (an organ), 1 mm voxels."""
    image = np.zeros((16, 16, 16), np.float32)
    image[2:14, 3:13, 4:12] = 100.0
    mask = np.zeros((16, 16, 16), np.int64)
    mask[6:9, 6:9, 6:9] = 1
    return image, mask, np.eye(4)


@pytest.mark.parametrize("crop,shape,origin", [
    ("foreground", (3, 3, 3), (6, 6, 6)),   # the mask's box
    ("nonzero", (12, 10, 8), (2, 3, 4)),    # the image's nonzero box
    ("none", (16, 16, 16), (0, 0, 0)),      # the whole volume
])
def test_crop_mode_keeps_its_box_exactly(crop, shape, origin):
    image, mask, affine = _volume()
    out = preprocess_case(image, mask, affine, spacing=None, shape=shape, margin=0, intensity_mode="window",
                          window=(0, 100), crop=crop)
    # the box fits the target shape exactly: nothing padded (-1) unless the image is 0 there, no label lost
    assert out.foreground_lost_voxels == 0 and out.mask.sum() == 27
    np.testing.assert_allclose(out.affine[:3, 3], origin, atol=1e-6)  # the crop's first voxel in mm
    if crop == "nonzero":
        assert (out.image == 1.0).all()  # every kept voxel is body
    if crop == "none":
        assert (out.image == -1.0).sum() == 16**3 - 12 * 10 * 8


def test_nonzero_crop_of_an_all_zero_image_is_skipped_and_noted():
    image, mask, affine = _volume()
    out = preprocess_case(np.zeros_like(image), mask, affine, spacing=None, shape=(16, 16, 16), margin=0,
                          intensity_mode="window", window=(0, 100), crop="nonzero")
    assert out.notes == ["image all zero: nonzero crop skipped"]


def test_crop_none_is_not_read_as_crop_to_image():
    args = build_parser().parse_args(["prepare", "raw", "--out", "o", "--crop", "none"])
    assert args.crop == "none" and args.crop_to_image is False
    with pytest.raises(SystemExit):  # no prefix matching any more: --crop-to is not --crop-to-image
        build_parser().parse_args(["prepare", "raw", "--out", "o", "--crop-to"])
