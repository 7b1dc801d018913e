"""Bad 2D inputs: every problem is reported at once, naming its file, and nothing is written."""

import numpy as np
import pytest
from PIL import Image

from synthmed.data.prepare import make_options, prepare_dataset
from synthmed.data.toy2d import write_toy_2d_dataset
from synthmed.errors import UserError


def _refused(tmp_path, inputs, match=None, **kw):
    out = tmp_path / "out"
    options = make_options(**{"folds": 0, **kw})
    with pytest.raises(UserError, match=match) as err:
        prepare_dataset(inputs, out, options, progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    return str(err.value)


@pytest.fixture
def raw(tmp_path):
    return write_toy_2d_dataset(tmp_path / "raw", n=12, size=16)


def test_all_file_problems_listed_together(tmp_path, raw):
    images, masks = raw / "images", raw / "masks"
    (images / "toy2d_000.png").write_bytes(b"not a png")  # unreadable
    truncated = images / "toy2d_001.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    (masks / "toy2d_002.png").unlink()  # image without mask
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(masks / "extra.png")  # mask without image
    Image.fromarray(np.zeros((16, 17), np.uint8)).save(masks / "toy2d_003.png")  # size mismatch
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[:4, :4, 0] = 255
    Image.fromarray(colour).save(masks / "toy2d_004.png")  # colour-coded mask
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(masks / "toy2d_005.jpg")  # second mask for 005
    big = np.zeros((16, 16), np.uint16)
    big[0, 0] = 300
    Image.fromarray(big).save(masks / "toy2d_006.png")  # label above 255
    msg = _refused(tmp_path, [raw])
    expected = [
        f"{masks / 'extra.png'}: mask has no image in {images}",
        f"{images / 'toy2d_002.png'}: image has no mask (expected {masks / 'toy2d_002.png'})",
    ]
    assert "Cannot read the input datasets (2 problems)" in msg  # the unpaired files make one problem
    for line in expected:
        assert line in msg, msg
    assert f"{masks / 'toy2d_005.png'}: same name as toy2d_005.jpg" in msg or \
        f"{masks / 'toy2d_005.jpg'}: same name as toy2d_005.png" in msg
    # discovery problems come first; the per-file checks of the next run then name each file:
    (masks / "extra.png").unlink()
    (masks / "toy2d_005.jpg").unlink()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(masks / "toy2d_002.png")
    msg = _refused(tmp_path, [raw], match="5 of 12 cases failed the checks; nothing was written")
    for line in [
        f"{images / 'toy2d_000.png'}: unreadable image",
        f"{truncated}: unreadable image",
        f"{masks / 'toy2d_003.png'}: mask size 16x17 differs from image size 16x16 (H x W, toy2d_003.png)",
        f"{masks / 'toy2d_004.png'}: colour mask: the channels differ",
        f"{masks / 'toy2d_006.png'}: mask value 300 above 255",
    ]:
        assert line in msg, msg


def test_jpeg_mask_problems_named(tmp_path, raw):
    masks = raw / "masks"
    (masks / "toy2d_000.png").unlink()
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))).save(masks / "toy2d_000.jpg")  # a ramp
    (masks / "toy2d_001.png").unlink()
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[:8, :, 0] = 255  # red and green label regions
    colour[8:, :, 1] = 255
    Image.fromarray(colour).save(masks / "toy2d_001.jpg", quality=95)
    (masks / "toy2d_002.png").unlink()
    Image.fromarray(np.kron(np.eye(2, dtype=np.uint8), np.ones((8, 8), np.uint8))).save(masks / "toy2d_002.jpg")
    msg = _refused(tmp_path, [raw], match="3 of 12 cases failed")
    assert f"{masks / 'toy2d_000.jpg'}: JPEG mask values do not cluster near 0 and 255: " in msg
    assert f"{masks / 'toy2d_001.jpg'}: JPEG mask has colour" in msg
    assert f"{masks / 'toy2d_002.jpg'}: JPEG mask has no pixel above 127 but values up to 1" in msg


def test_nan_float_tiff_and_mixed_bit_depths(tmp_path):
    import tifffile

    raw = write_toy_2d_dataset(tmp_path / "raw", n=10, size=16, fmt="tif")
    bad = raw / "images" / "toy2d_000.tif"
    pixels = tifffile.imread(bad).astype(np.float32)
    pixels[2, 3] = np.nan
    tifffile.imwrite(bad, pixels)
    msg = _refused(tmp_path, [raw], match="1 of 10 cases failed")
    assert f"{bad}: 1 NaN and 0 Inf pixels (expected none)" in msg
    tifffile.imwrite(bad, (np.nan_to_num(pixels) * 200).astype(np.uint16))
    msg = _refused(tmp_path, [raw], match="Cannot prepare the dataset")
    assert "images mix pixel types: uint16 (1, e.g. " + str(bad) + "), uint8 (9, e.g. " in msg


def test_duplicate_ids_after_sanitising(tmp_path, raw):
    for sub in ("images", "masks"):
        (raw / sub / "toy2d_000.png").rename(raw / sub / "case (1).png")
        (raw / sub / "toy2d_001.png").rename(raw / sub / "case_1.png")
    msg = _refused(tmp_path, [raw], match="case id 'case_1' already used")
    assert str(raw / "images" / "case_1.png") in msg and str(raw / "images" / "case (1).png") in msg


def test_empty_masks_everywhere_refused(tmp_path, raw):
    for f in (raw / "masks").iterdir():
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(f)
    _refused(tmp_path, [raw], match="all 12 masks are empty after reading")


def test_option_conflicts(tmp_path, raw, toy_msd):
    _refused(tmp_path, [raw], match="--slices / --mosaic cut 3D volumes", slices="axial")
    _refused(tmp_path, [raw], match="2D cases need 2 numbers", shape=(16, 16, 16))
    _refused(tmp_path, [raw], match="--spacing resamples 3D volumes", spacing=(1, 1, 1))
    _refused(tmp_path, [toy_msd], match="3D volumes need 3 numbers", shape=(16, 16))
    _refused(tmp_path, [toy_msd], match="pad_resize is for 2D images", shape_mode="pad_resize")
    _refused(tmp_path, [toy_msd], match="--channels is for 2D images", channels=3)
    _refused(tmp_path, [toy_msd], match="not divisible into a 3 x 3 mosaic", mosaic=(3, 3), shape=(16, 16))
    with pytest.raises(UserError, match="foreground_slices_only and max_slices need slices"):
        make_options(foreground_slices_only=True)
    _refused(tmp_path, [raw, toy_msd], match="inputs mix 3D volumes")
