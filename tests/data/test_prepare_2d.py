"""2D prepare: PNG/JPEG/TIFF folders, mask rules, bit depths, channels, shapes, errors."""

import json

import numpy as np
import pytest
from scipy import ndimage

from synthmed.data.dataset import load_arrays, load_case_arrays
from synthmed.data.manifest import load_manifest


def test_toy_prepared_2d_fixture_follows_the_2d_conventions(toy_prepared_2d):
    from synthmed.train.loop import data_record

    m = load_manifest(toy_prepared_2d)
    pre = m.preprocessing
    assert (pre["dims"], pre["shape"], pre["channels"], pre["bit_depth"]) == (2, [32, 32], 1, 8)
    assert pre["intensity"]["mode"] == "window" and (pre["intensity"]["lo"], pre["intensity"]["hi"]) == (0, 255)
    assert m.labels == {0: "background", 1: "label_1"}
    ids = m.split_ids("train")
    assert (len(ids), len(m.split_ids("val")), len(m.split_ids("test"))) == (17, 2, 5)
    images, masks = load_arrays(m, ids)
    assert images.shape == (17, 1, 32, 32) and images.dtype == np.float32
    assert masks.shape == (17, 32, 32) and masks.dtype == np.int64
    assert -1 <= images.min() and images.max() <= 1 and set(np.unique(masks)) == {0, 1}
    # the disc (label 1) is bright, the background dark: 0.8 and 0.2 of full scale -> 0.6 and -0.6
    assert images[:, 0][masks == 1].mean() == pytest.approx(0.6, abs=0.05)
    assert images[:, 0][masks == 0].mean() == pytest.approx(-0.6, abs=0.05)
    image, mask = load_case_arrays(m, ids[0])
    assert image.shape == (1, 32, 32) and mask.shape == (32, 32)
    record = data_record(m, ids)
    assert record["train_cases"][0]["affine"] is None and record["train_cases"][0]["spacing"] == [1.0, 1.0]
    assert load_arrays(m, [])[0].shape == (0, 1, 32, 32)
    json.dumps(record)  # checkpoints store it as JSON-like data


OPTS = dict(test_fraction=0.2, val_fraction=0.1, folds=2)


def _prepare(inputs, out, **kw):
    from synthmed.data.prepare import make_options, prepare_dataset

    return load_manifest(prepare_dataset(inputs, out, make_options(**{**OPTS, **kw}), progress=False))


def _raw_pixels(path):
    from synthmed.data.images2d import read_pixels

    return read_pixels(path)


def test_rgb_png_keeps_colour(tmp_path):
    from synthmed.data.toy2d import write_toy_2d_dataset

    raw = write_toy_2d_dataset(tmp_path / "raw", n=10, size=24, rgb=True)
    m = _prepare([raw], tmp_path / "out")
    assert m.preprocessing["channels"] == 3 and m.preprocessing["bit_depth"] == 8
    images, masks = load_arrays(m, [c["id"] for c in m.cases])
    assert images.shape == (10, 3, 24, 24)
    disc = images.transpose(1, 0, 2, 3)[:, masks == 1].mean(1)  # mean R, G, B inside the disc
    # tint 1.0 / 0.8 / 0.6 of level 0.8: 204, 163, 122 -> 0.6, 0.28, -0.04 in [-1, 1]
    np.testing.assert_allclose(disc, [0.6, 0.28, -0.04], atol=0.03)
    # same pixels as the files: no resize, window 0..255
    pixels = _raw_pixels(raw / "images" / "toy2d_000.png")
    z = np.load(m.cache_path("toy2d_000"))
    np.testing.assert_allclose(z["image"], pixels.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)

    gray = _prepare([raw], tmp_path / "gray", channels=1)
    g = np.load(gray.cache_path("toy2d_000"))["image"]
    luma = (pixels.astype(np.float64) @ [0.299, 0.587, 0.114]) / 127.5 - 1
    assert g.shape == (1, 24, 24) and np.abs(g[0] - luma).max() < 1e-5


def test_grayscale_among_colour_images_is_repeated_over_rgb(tmp_path):
    from PIL import Image

    from synthmed.data.toy2d import write_toy_2d_dataset

    raw = write_toy_2d_dataset(tmp_path / "raw", n=8, size=16, rgb=True)
    gray_file = raw / "images" / "toy2d_003.png"
    gray = np.asarray(Image.open(gray_file).convert("L"))
    Image.fromarray(gray).save(gray_file)
    m = _prepare([raw], tmp_path / "out", folds=0)
    assert m.preprocessing["channels"] == 3
    image = np.load(m.cache_path("toy2d_003"))["image"]
    assert image.shape == (3, 16, 16)
    np.testing.assert_allclose(image, np.repeat(gray[None] / 127.5 - 1, 3, 0), atol=1e-6)
    assert m.case("toy2d_003")["original_channels"] == 1 and m.case("toy2d_000")["original_channels"] == 3


def test_jpeg_mask_rule_known_answer():
    from pathlib import Path

    from synthmed.data.images2d import _read_jpeg_mask

    gray = np.zeros((40, 40), np.uint8)
    gray[20:] = 255
    gray[0, :5] = [0, 20, 63, 64, 127]
    gray[39, :5] = [128, 191, 192, 235, 255]
    expected = (np.arange(40)[:, None] >= 20) * np.ones((1, 40), np.uint8)
    mask = _read_jpeg_mask(Path("m.jpg"), gray, [])
    np.testing.assert_array_equal(mask.labels, expected)  # label = gray > 127
    assert mask.midgrey_pixels == 4  # 64, 127, 128, 191: 0.25% of the pixels, under the 1% limit
    rgb = np.stack([gray, gray, gray], -1)  # identical channels: the same answer
    np.testing.assert_array_equal(_read_jpeg_mask(Path("m.jpg"), rgb, []).labels, expected)
    gray[10:14] = 128  # 4 rows = 160 mid-grey pixels = 10%
    problems = []
    assert _read_jpeg_mask(Path("m.jpg"), gray, problems) is None
    assert problems == [
        "m.jpg: JPEG mask values do not cluster near 0 and 255: 10.25% of pixels are mid-grey (64..191; "
        "at most 1% allowed); only binary masks can be JPEG: store multi-label or soft masks as PNG"
    ]


def test_jpeg_masks_read_from_files(tmp_path):
    from PIL import Image

    from synthmed.data.images2d import read_mask_2d
    from synthmed.data.toy2d import write_toy_2d_dataset

    blocks = np.kron(np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], np.uint8), np.ones((8, 8), np.uint8))
    speckle = np.random.default_rng(0).integers(0, 30, blocks.shape)  # levels 0..29 and 226..255
    source = np.where(blocks == 1, 255 - speckle, speckle).astype(np.uint8)
    Image.fromarray(source).convert("RGB").save(tmp_path / "blocks.jpg", quality=75)
    noisy = _raw_pixels(tmp_path / "blocks.jpg")
    assert noisy.ndim == 3 and not np.isin(noisy, [0, 255]).all()  # JPEG noise around 0 and 255
    np.testing.assert_array_equal(read_mask_2d(tmp_path / "blocks.jpg", []).labels, blocks)  # exact

    raw = write_toy_2d_dataset(tmp_path / "raw", n=8, size=40, fmt="jpg", rgb=True)
    truth = write_toy_2d_dataset(tmp_path / "truth", n=8, size=40, fmt="png")  # same seed: same discs
    for i in range(8):
        exact = _raw_pixels(truth / "masks" / f"toy2d_{i:03d}.png") // 255
        labels = read_mask_2d(raw / "masks" / f"toy2d_{i:03d}.jpg", []).labels
        wrong = labels != exact
        # JPEG ringing can only flip pixels on the disc's edge (one of the 8 neighbours differs)
        ring = np.ones((3, 3), bool)
        edge = ndimage.binary_dilation(exact, ring) & ~ndimage.binary_erosion(exact, ring, border_value=1)
        assert not (wrong & ~edge).any(), np.argwhere(wrong & ~edge)
        assert wrong.sum() <= 0.1 * edge.sum()
    m = _prepare([raw], tmp_path / "out", folds=0)
    masks = m.preprocessing["masks"]
    assert masks["rules"] == {"jpeg_threshold": 8} and masks["jpeg_threshold"] == 127
    assert masks["jpeg_mask_pixels"] == 8 * 40 * 40 and 0 <= masks["jpeg_midgrey_pixels"] < 8 * 40 * 40 * 0.01
    assert m.labels == {0: "background", 1: "label_1"} and m.preprocessing["channels"] == 3


def test_16bit_png_round_trip_keeps_values(tmp_path):
    from synthmed.data.toy2d import write_toy_2d_dataset
    from synthmed.sample.postprocess import images_to_original_units

    raw = write_toy_2d_dataset(tmp_path / "raw", n=8, size=20, bits=16)
    pixels = np.stack([_raw_pixels(raw / "images" / f"toy2d_{i:03d}.png") for i in range(8)])
    assert pixels.dtype == np.uint16 and pixels.max() > 255
    m = _prepare([raw], tmp_path / "out", folds=0)
    pre = m.preprocessing
    assert pre["bit_depth"] == 16 and pre["pixel_type"] == "uint16"
    # the window is the data's own range, so [-1, 1] covers exactly the values present
    assert pre["intensity"] == {"mode": "window", "lo": float(pixels.min()), "hi": float(pixels.max()),
                                "from": "data range"}
    images, _ = load_arrays(m, [f"toy2d_{i:03d}" for i in range(8)])
    assert images.min() == -1.0 and images.max() == 1.0
    back = np.rint(images_to_original_units(images[:, 0], pre["intensity"]))
    np.testing.assert_array_equal(back, pixels)
    fixed = _prepare([raw], tmp_path / "fixed", folds=0, window=(0, 65535))
    assert (fixed.preprocessing["intensity"]["lo"], fixed.preprocessing["intensity"]["hi"]) == (0, 65535)
    assert fixed.preprocessing["intensity"]["from"] == "--window"


@pytest.mark.parametrize("bits,rgb", [(8, False), (16, False), (16, True)])
def test_tiff(tmp_path, bits, rgb):
    from synthmed.data.toy2d import write_toy_2d_dataset

    raw = write_toy_2d_dataset(tmp_path / "raw", n=8, size=16, fmt="tif", bits=bits, rgb=rgb)
    m = _prepare([raw], tmp_path / "out", folds=0)
    assert (m.preprocessing["bit_depth"], m.preprocessing["channels"]) == (bits, 3 if rgb else 1)
    assert m.preprocessing["masks"]["rules"] == {"binary_255": 8}
    images, masks = load_arrays(m, ["toy2d_000"])
    assert images.shape == (1, 3 if rgb else 1, 16, 16) and set(np.unique(masks)) == {0, 1}
    assert images[0, 0][masks[0] == 1].mean() > images[0, 0][masks[0] == 0].mean() + 0.5


def test_float_tiff_with_data_range(tmp_path):
    import tifffile

    from synthmed.data.toy2d import write_toy_2d_dataset

    raw = write_toy_2d_dataset(tmp_path / "raw", n=6, size=16, fmt="tif")
    for f in (raw / "images").iterdir():
        tifffile.imwrite(f, _raw_pixels(f).astype(np.float32) - 100.0)  # e.g. signed physical units
    m = _prepare([raw], tmp_path / "out", folds=0, test_fraction=0.2, val_fraction=0.0)
    assert m.preprocessing["pixel_type"] == "float32" and m.preprocessing["bit_depth"] == 16
    assert m.preprocessing["intensity"]["from"] == "data range" and m.preprocessing["intensity"]["lo"] < 0


def test_resize_modes_and_original_size(tmp_path):
    from PIL import Image

    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "labels").mkdir()
    for i, (h, w) in enumerate([(20, 40), (40, 20), (30, 30), (24, 48), (10, 10), (64, 32)]):
        image = np.full((h, w), 200, np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1  # small integer labels stay as they are
        Image.fromarray(image).save(raw / "images" / f"c{i}.png")
        Image.fromarray(mask).save(raw / "labels" / f"c{i}.png")
    from synthmed.errors import UserError

    with pytest.raises(UserError, match="6 different sizes .*pass --shape H W"):
        _prepare([raw], tmp_path / "none", folds=0)
    m = _prepare([raw], tmp_path / "pad", shape=(16, 16), shape_mode="pad_resize", folds=0)
    case = m.case("c0")
    assert case["original_shape"] == [20, 40] and case["shape"] == [16, 16] and case["mask_rule"] == "labels"
    assert case["spacing"] == [2.5, 2.5]  # 40 input pixels over 16 output pixels, both axes
    z = np.load(m.cache_path("c0"))
    # 20x40 padded to 40x40 (10 rows of -1 above and below), then halved and more: rows 0..3 are padding
    np.testing.assert_allclose(z["image"][0, :3], -1.0, atol=1e-5)
    assert (z["image"][0, 5:11] > 0.5).all() and np.allclose(z["image"][0, 13:], -1.0, atol=1e-5)
    m = _prepare([raw], tmp_path / "resize", shape=(16, 16), folds=0)
    assert m.preprocessing["shape_mode"] == "resize"
    assert m.case("c0")["spacing"] == [1.25, 2.5]
    z = np.load(m.cache_path("c0"))
    assert np.allclose(z["image"], 200 / 127.5 - 1, atol=1e-5)  # a constant image stays constant
    np.testing.assert_array_equal(z["mask"][4:12, 4:12], 1)  # the centre half is labelled
    assert z["mask"].sum() == 64
    m = _prepare([raw], tmp_path / "crop", shape=(16, 16), shape_mode="pad_crop", folds=0)
    # 64x32 with a 32x16 labelled centre: the central 16x16 crop keeps 256 of its 512 pixels
    assert m.case("c5")["foreground_lost_voxels"] == 256 and m.case("c5")["spacing"] == [1.0, 1.0]
    assert m.case("c0")["foreground_lost_voxels"] == 40  # 10x20 labelled, 10x16 inside the crop


def test_group_regex_and_subfolders_keep_sequences_together(tmp_path):
    from synthmed.data.toy2d import write_toy_2d_dataset

    raw = write_toy_2d_dataset(tmp_path / "raw", n=24, size=12)
    for sub in ("images", "masks"):  # 6 videos x 4 frames: vidA_f0 ... vidF_f3
        for i, f in enumerate(sorted((raw / sub).iterdir())):
            f.rename(f.with_name(f"vid{'ABCDEF'[i // 4]}_f{i % 4}.png"))
    m = _prepare([raw], tmp_path / "regex", group_regex=r"^(vid[A-Z])_", folds=2)
    _assert_groups_within_one_split(m, expected_groups=6)

    nested = tmp_path / "nested"
    for sub in ("images", "masks"):  # one sub-folder per video: the default group
        for f in sorted((raw / sub).iterdir()):
            video, frame = f.stem.split("_")
            (nested / sub / video).mkdir(parents=True, exist_ok=True)
            f.rename(nested / sub / video / f"frame {frame}.png")  # a space: sanitised in the id
    m = _prepare([nested], tmp_path / "subfolders", folds=2)
    assert "vidA__frame_f0" in [c["id"] for c in m.cases]
    _assert_groups_within_one_split(m, expected_groups=6)


def _assert_groups_within_one_split(m, expected_groups):
    split_of = {i: name for name in ("train", "val", "test") for i in m.split_ids(name)}
    groups = {}
    for c in m.cases:
        groups.setdefault(c["group"], set()).add(split_of[c["id"]])
    assert len(groups) == expected_groups
    assert all(len(splits) == 1 for splits in groups.values()), groups
    for fold in m.splits["folds"]:
        fold_groups = {m.case(i)["group"] for i in fold}
        others = {m.case(i)["group"] for f in m.splits["folds"] if f is not fold for i in f}
        assert not fold_groups & others


def test_datalist_of_2d_files(tmp_path):
    from synthmed.data.toy2d import write_toy_2d_dataset

    write_toy_2d_dataset(tmp_path / "raw", n=8, size=16)
    datalist = {"training": [
        {"image": f"raw/images/toy2d_{i:03d}.png", "label": f"raw/masks/toy2d_{i:03d}.png", "group": f"p{i // 2}"}
        for i in range(8)
    ]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(datalist))
    m = _prepare([path], tmp_path / "out", folds=0)
    assert m.preprocessing["dims"] == 2 and len(m.cases) == 8
    _assert_groups_within_one_split(m, expected_groups=4)


def test_palette_and_bilevel_png_masks(tmp_path):
    from PIL import Image

    from synthmed.data.images2d import read_mask_2d

    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)  # colours, but the indices are labels
    palette.save(tmp_path / "p.png")
    mask = read_mask_2d(tmp_path / "p.png", [])
    np.testing.assert_array_equal(mask.labels, labels)
    assert mask.rule == "labels"
    Image.fromarray(labels > 0).save(tmp_path / "b.png")  # 1-bit PNG
    mask = read_mask_2d(tmp_path / "b.png", [])
    np.testing.assert_array_equal(mask.labels, labels > 0)
    assert mask.rule == "binary_255"


def test_channels_3_repeats_grayscale(tmp_path):
    from synthmed.data.toy2d import write_toy_2d_dataset

    raw = write_toy_2d_dataset(tmp_path / "raw", n=8, size=16)
    m = _prepare([raw], tmp_path / "out", channels=3, folds=0)
    image = np.load(m.cache_path("toy2d_000"))["image"]
    assert m.preprocessing["channels"] == 3 and image.shape == (3, 16, 16)
    assert (image[0] == image[1]).all() and (image[1] == image[2]).all()
