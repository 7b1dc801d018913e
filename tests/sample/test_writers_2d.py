"""2D synthetic sets: lossless PNG pairs that read back to the values written."""

import json

import numpy as np
import pytest
from PIL import Image

from synthmed.errors import UserError
from synthmed.sample.synthetic_set import load_masks, load_synthetic_set
from synthmed.sample.writers import write_synthetic_set

LABELS = {"0": "background", "1": "polyp"}
PHOTO = {"mode": "window", "lo": 0.0, "hi": 255.0}


def _pairs(n=3, channels=1, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, channels, size, size)).astype(np.float32)
    masks = (rng.uniform(size=(n, size, size)) > 0.7).astype(np.int64)
    return images, masks


def _write(out, images, masks, **kw):
    args = dict(intensity=PHOTO, labels=LABELS, affine=None, modality="endoscopy", card={"format": "synthmed-card"})
    args.update(kw)
    return write_synthetic_set(out, images, masks, **args)


@pytest.mark.parametrize("channels", [1, 3])
def test_8bit_png_pixels_are_the_original_values(tmp_path, channels):
    images, masks = _pairs(channels=channels)
    out = _write(tmp_path / "syn", images, masks)
    with Image.open(out / "imagesTr" / "syn_0000_0000.png") as im:
        assert im.mode == ("L" if channels == 1 else "RGB") and not im.info.get("dpi")
        pixels = np.asarray(im)
    expected = np.rint((images[0] + 1) * 127.5)
    assert np.array_equal(pixels if channels == 3 else pixels[None], np.moveaxis(expected, 0, -1) if channels == 3 else expected)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["file_ending"] == ".png" and dataset["numTraining"] == 3
    read_images, read_masks, names = load_synthetic_set(out, (16, 16))
    assert read_images.shape == (3, channels, 16, 16) and names == ["syn_0000", "syn_0001", "syn_0002"]
    assert np.array_equal(read_masks, masks)
    assert np.allclose(read_images, np.rint((images + 1) * 127.5), atol=1e-4)


def test_16bit_png_keeps_16_bit_levels_and_the_physical_window(tmp_path):
    images, masks = _pairs()
    window = {"mode": "window", "lo": -100.0, "hi": 300.0}
    out = _write(tmp_path / "syn", images, masks, intensity=window, bit_depth=16)
    with Image.open(out / "imagesTr" / "syn_0001_0000.png") as im:
        pixels = np.asarray(im)
    assert pixels.dtype == np.uint16 and pixels.max() > 255
    read_images, _, _ = load_synthetic_set(out, (16, 16))
    physical = (images + 1) / 2 * 400 - 100
    assert np.abs(read_images - physical).max() < 400 / 65535 + 1e-4  # one 16-bit level


def test_mask_only_set_has_labels_and_no_images(tmp_path):
    _, masks = _pairs()
    out = _write(tmp_path / "masks", np.zeros((3, 0, 16, 16), np.float32), masks)
    assert not list((out / "imagesTr").iterdir())
    loaded, names = load_masks(out, (16, 16), num_labels=2)
    assert np.array_equal(loaded, masks) and len(names) == 3


def test_mask_folder_of_0_255_pngs_becomes_binary_and_bad_files_are_named(tmp_path):
    folder = tmp_path / "given"
    folder.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    Image.fromarray(mask).save(folder / "a.png")
    loaded, _ = load_masks(folder, (16, 16), num_labels=2)
    assert set(np.unique(loaded).tolist()) == {0, 1} and loaded.sum() == 16
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "small.png")
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError) as err:
        load_masks(folder, (16, 16), num_labels=2)
    assert "small.png" in str(err.value) and "broken.png" in str(err.value)


def test_bad_2d_input_is_refused_before_writing(tmp_path):
    images, masks = _pairs(channels=2)
    with pytest.raises(UserError, match="grayscale or RGB"):
        _write(tmp_path / "syn", images, masks)
    assert not (tmp_path / "syn").exists()
    images, masks = _pairs()
    with pytest.raises(UserError, match="8- or 16-bit"):
        _write(tmp_path / "syn", images, masks, bit_depth=12)
    assert not (tmp_path / "syn").exists()
