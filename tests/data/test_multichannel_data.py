"""Multi-channel 3D inputs: datalist image lists, nnU-Net _000N files, 4D NIfTI (MSD Task01); per-channel
geometry checks and intensity mapping."""

import json

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.discover import discover_sources
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy_channels import write_toy_channels
from synthmed.errors import UserError
from synthmed.sample.postprocess import check_image_channels, images_to_network_units, images_to_original_units, intensity_range

OPTIONS = dict(shape=(16, 16, 16), test_fraction=0.25, val_fraction=0.0, folds=0)
NAMES = {2: ["FLAIR", "T1w"], 4: ["CT", "T1w", "t1gd", "T2w"]}


def raw_channels(root, layout, case="mc_000"):
    """[C, D, H, W] of one raw case, read straight from the files the toy wrote."""
    if layout == "msd4d":
        return np.moveaxis(np.asarray(nib.load(root / "imagesTr" / f"{case}.nii.gz").dataobj), -1, 0)
    files = sorted((root / "imagesTr").glob(f"{case}_*.nii.gz"))
    return np.stack([np.asarray(nib.load(f).dataobj) for f in files])


@pytest.mark.parametrize("layout", ["datalist", "nnunet", "msd4d"])
@pytest.mark.parametrize("n", [2, 4])
def test_each_layout_prepares_c_channels_with_their_own_intensity_map(tmp_path, layout, n):
    names = NAMES[n]
    source = write_toy_channels(tmp_path / "raw", names, layout, n_cases=8)
    manifest = json.loads(prepare_dataset([source], tmp_path / "prep", PrepareOptions(**OPTIONS), progress=False).read_text())
    pre = manifest["preprocessing"]
    assert pre["channels"] == n and pre["modality"] == names
    channels = pre["intensity"]["channels"]
    assert pre["intensity"]["mode"] == "per_channel" and [c["name"] for c in channels] == names
    assert [c["mode"] for c in channels] == ["window" if m == "CT" else "percentile" for m in names]
    entry = next(c for c in manifest["cases"] if c["id"] == "mc_000")
    raw = raw_channels(tmp_path / "raw", layout)
    for c, name in enumerate(names):  # each channel's own range: the window, or its own percentiles
        expected = (-1024.0, 600.0) if name == "CT" else tuple(np.percentile(raw[c], (0.5, 99.5)))
        assert entry["intensity"]["lo"][c] == pytest.approx(expected[0], rel=1e-5)
        assert entry["intensity"]["hi"][c] == pytest.approx(expected[1], rel=1e-5)
    image = np.load(tmp_path / "prep" / entry["cache"])["image"]
    assert image.shape == (n, 16, 16, 16) and image.dtype == np.float32 and -1 <= image.min() < image.max() <= 1
    # the centre voxel (inside the sphere's core, not moved by the crop) maps back to its raw value
    lo, hi = np.array(entry["intensity"]["lo"]), np.array(entry["intensity"]["hi"])
    back = (image[:, 8, 8, 8] + 1) / 2 * (hi - lo) + lo
    centre = raw[:, 7:10, 7:10, 7:10].reshape(n, -1)
    assert all(np.isclose(centre[c], back[c], atol=1e-2 * (hi[c] - lo[c])).any() for c in range(n))


def test_per_channel_intensity_undone_per_channel():
    intensity = {"mode": "per_channel", "channels": [{"name": "CT", "mode": "window", "lo": -1000.0, "hi": 1000.0},
                                                      {"name": "T1w", "mode": "percentile", "lower_pct": 0.5, "upper_pct": 99.5,
                                                       "reference_lo": 0.0, "reference_hi": 10.0}]}
    images = np.zeros((3, 2, 4, 4, 4), np.float32)
    original = images_to_original_units(images, intensity)
    assert np.all(original[:, 0] == 0.0) and np.all(original[:, 1] == 5.0)
    assert np.allclose(images_to_network_units(original, intensity), images)
    assert np.all(images_to_original_units(images[0], intensity, channel_axis=0)[1] == 5.0)
    assert intensity_range(intensity, 1) == (0.0, 10.0)
    with pytest.raises(UserError, match="lack the manifest's 2 channels"):
        images_to_original_units(images[:, :1], intensity)
    with pytest.raises(UserError, match="SYN: images have 1 channel.s.; the manifest's images have 2"):
        check_image_channels(images[:, :1], intensity, "SYN")
    check_image_channels(images, intensity, "SYN")


def test_a_channel_file_off_the_mask_geometry_is_named(tmp_path):
    root = write_toy_channels(tmp_path / "raw", NAMES[2], "nnunet", n_cases=4)
    bad = root / "imagesTr" / "mc_002_0001.nii.gz"
    img = nib.load(bad)
    affine = img.affine.copy()
    affine[1, 3] += 0.7
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), bad)
    wrong_shape = root / "imagesTr" / "mc_001_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 15), np.float32), img.affine), wrong_shape)
    with pytest.raises(UserError) as err:
        prepare_dataset([root], tmp_path / "prep", PrepareOptions(**OPTIONS), progress=False)
    assert f"{bad}: channel 1 affine differs from its mask's (mc_002.nii.gz) by up to 0.7 mm" in str(err.value)
    assert f"{wrong_shape}: channel 1 has shape 16x16x15, its mask mc_001.nii.gz 16x16x16" in str(err.value)
    assert not (tmp_path / "prep").exists()


def test_resampling_and_resize_keep_every_channel(tmp_path):
    source = write_toy_channels(tmp_path / "raw", NAMES[2], "msd4d", n_cases=4, spacing=(1.0, 1.0, 2.0))
    options = PrepareOptions(**{**OPTIONS, "shape": (12, 12, 12)}, spacing=(2.0, 2.0, 2.0), shape_mode="resize")
    manifest = json.loads(prepare_dataset([source], tmp_path / "prep", options, progress=False).read_text())
    image = np.load(tmp_path / "prep" / manifest["cases"][0]["cache"])["image"]
    assert image.shape == (2, 12, 12, 12) and not np.allclose(image[0], image[1])


def test_cases_with_different_channel_counts_are_refused(tmp_path):
    root = write_toy_channels(tmp_path / "raw", NAMES[2], "msd4d", n_cases=4)
    odd = root / "imagesTr" / "mc_003.nii.gz"
    img = nib.load(odd)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :1].repeat(3, -1), img.affine), odd)
    with pytest.raises(UserError, match=rf"{odd}: 3 channel\(s\), other cases 2"):
        prepare_dataset([root], tmp_path / "prep", PrepareOptions(**OPTIONS), progress=False)


def test_datalist_image_lists_and_nnunet_files_pair_into_one_case_per_mask(tmp_path):
    for layout in ("datalist", "nnunet"):
        [source] = discover_sources([write_toy_channels(tmp_path / layout, NAMES[4], layout, n_cases=3)])
        assert [len(c.image_files) for c in source.cases] == [4, 4, 4]
        assert [p.name for p in source.cases[0].image_files] == [f"mc_000_000{c}.nii.gz" for c in range(4)]
        assert source.channel_names == NAMES[4]


def test_modality_option_names_every_channel(tmp_path):
    root = write_toy_channels(tmp_path / "raw", ["a", "b"], "datalist", n_cases=4)
    options = PrepareOptions(**OPTIONS, modality="CT,MRI")
    pre = json.loads(prepare_dataset([root], tmp_path / "prep", options, progress=False).read_text())["preprocessing"]
    assert [c["mode"] for c in pre["intensity"]["channels"]] == ["window", "percentile"]
    with pytest.raises(UserError, match="--modality CT,MRI,T2: 3 names for images with 2 channels"):
        prepare_dataset([root], tmp_path / "prep3", PrepareOptions(**OPTIONS, modality="CT,MRI,T2"), progress=False)


def test_slices_of_multi_channel_volumes_are_refused(tmp_path):
    root = write_toy_channels(tmp_path / "raw", NAMES[2], "msd4d", n_cases=4)
    with pytest.raises(UserError, match="--slices / --mosaic take single-channel volumes"):
        prepare_dataset([root], tmp_path / "prep", PrepareOptions(shape=(16, 16), slices="axial", test_fraction=0.25,
                                                                  val_fraction=0.0, folds=0), progress=False)


def test_analyze_reports_the_channels_and_each_channels_range(tmp_path):
    from synthmed.data.analyze import analyze_dataset

    root = write_toy_channels(tmp_path / "raw", NAMES[4], "msd4d", n_cases=3)
    [source] = analyze_dataset([root], print_report=False)["sources"]
    raw = raw_channels(root, "msd4d")
    case = source["cases"]["mc_000"]
    assert case["channels"] == 4 and case["shape"] == [16, 16, 16] and source["summary"]["channels"] == [4]
    assert [c["min"] for c in case["intensity_per_channel"]] == pytest.approx(raw.reshape(4, -1).min(1))
