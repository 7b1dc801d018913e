"""Every bad input gives one error naming the file, and nothing is written."""

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.prepare import PrepareOptions, make_options, prepare_dataset
from synthmed.errors import UserError

OPTS = dict(shape=(16, 16, 16), folds=2)


def _prepare(inputs, out, **kw):
    return prepare_dataset(inputs, out, PrepareOptions(**{**OPTS, **kw}), progress=False)


def _rewrite(path: Path, image=None, affine=None):
    old = nib.load(path)
    data = np.asarray(old.dataobj) if image is None else image
    nib.save(nib.Nifti1Image(data, old.affine if affine is None else affine), path)


def _assert_nothing_written(tmp_path: Path, out: Path):
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def _refused(tmp_path, inputs, match, **kw):
    out = tmp_path / "out"
    with pytest.raises(UserError, match=match) as err:
        _prepare(inputs, out, **kw)
    _assert_nothing_written(tmp_path, out)
    return str(err.value)


def test_truncated_file_named(tmp_path, toy_msd):
    f = toy_msd / "imagesTr" / "toy_003.nii.gz"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    msg = _refused(tmp_path, [toy_msd], "unreadable or truncated")
    assert str(f) in msg


def test_garbage_file_named(tmp_path, toy_msd):
    f = toy_msd / "labelsTr" / "toy_004.nii.gz"
    f.write_bytes(b"not a nifti file at all")
    assert str(f) in _refused(tmp_path, [toy_msd], "unreadable")


def test_shape_mismatch_two_voxels_refused_even_with_flag(tmp_path, toy_msd):
    f = toy_msd / "labelsTr" / "toy_001.nii.gz"
    _rewrite(f, image=np.zeros((16, 18, 16), np.uint8))
    msg = _refused(tmp_path, [toy_msd], "mask shape 16x18x16 differs from image shape 16x16x16")
    assert str(f) in msg and "--crop-to-image" not in msg
    _refused(tmp_path, [toy_msd], "16x18x16 differs", crop_to_image=True)


def test_one_voxel_excess_suggests_flag_and_flag_fixes_it(tmp_path, toy_msd):
    f = toy_msd / "labelsTr" / "toy_001.nii.gz"
    old = np.asarray(nib.load(f).dataobj)
    _rewrite(f, image=np.pad(old, ((0, 0), (0, 1), (0, 0))))
    _refused(tmp_path, [toy_msd], "16x17x16 differs.*pass --crop-to-image")
    manifest = json.loads(_prepare([toy_msd], tmp_path / "out", crop_to_image=True).read_text())
    case = next(c for c in manifest["cases"] if c["id"] == "toy_001")
    assert case["fixes"] == ["mask cropped to image (16x17x16 -> 16x16x16, 0 labelled voxels removed)"]
    assert all(not c["fixes"] for c in manifest["cases"] if c["id"] != "toy_001")


def test_affine_mismatch(tmp_path, toy_msd):
    f = toy_msd / "labelsTr" / "toy_002.nii.gz"
    affine = nib.load(f).affine.copy()
    affine[0, 3] += 0.5
    _rewrite(f, affine=affine)
    assert str(f) in _refused(tmp_path, [toy_msd], "affine differs .* by up to 0.5 mm")
    affine[0, 3] -= 0.5 - 1e-4  # within tolerance: accepted
    _rewrite(f, affine=affine)
    _prepare([toy_msd], tmp_path / "out")


def test_nan_and_inf_voxels(tmp_path, toy_msd):
    f = toy_msd / "imagesTr" / "toy_005.nii.gz"
    data = np.asarray(nib.load(f).dataobj).astype(np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    _rewrite(f, image=data)
    assert str(f) in _refused(tmp_path, [toy_msd], "3 NaN and 1 Inf voxels")


def test_labels_outside_declared_set(tmp_path, toy_msd):
    f = toy_msd / "labelsTr" / "toy_006.nii.gz"
    data = np.asarray(nib.load(f).dataobj).copy()
    data[0, 0, 0] = 5
    _rewrite(f, image=data)
    msg = _refused(tmp_path, [toy_msd], r"label values \[5\] outside the declared labels \[0, 1, 2\]")
    assert str(f) in msg
    # declared on the command line instead: label 2 is now unknown in every case
    msg = _refused(tmp_path, [toy_msd], "outside the declared labels", labels={0: "bg", 1: "a", 5: "b"})
    assert "12 of 12 cases failed" in msg


def test_non_integer_mask(tmp_path, toy_msd):
    f = toy_msd / "labelsTr" / "toy_006.nii.gz"
    data = np.asarray(nib.load(f).dataobj).astype(np.float32)
    data[8, 8, 8] = 0.5
    _rewrite(f, image=data)
    _refused(tmp_path, [toy_msd], "non-integer values")


def test_all_problems_reported_at_once(tmp_path, toy_msd):
    bad_nan = toy_msd / "imagesTr" / "toy_000.nii.gz"
    data = np.asarray(nib.load(bad_nan).dataobj).astype(np.float32)
    data[0, 0, 0] = np.nan
    _rewrite(bad_nan, image=data)
    bad_shape = toy_msd / "labelsTr" / "toy_011.nii.gz"
    _rewrite(bad_shape, image=np.zeros((15, 16, 16), np.uint8))
    msg = _refused(tmp_path, [toy_msd], "2 of 12 cases failed")
    assert str(bad_nan) in msg and str(bad_shape) in msg


def test_empty_mask_is_a_warning_with_count(tmp_path, toy_msd, caplog):
    for i in (2, 7):
        f = toy_msd / "labelsTr" / f"toy_{i:03d}.nii.gz"
        _rewrite(f, image=np.zeros((16, 16, 16), np.uint8))
    with caplog.at_level(logging.WARNING):
        manifest = json.loads(_prepare([toy_msd], tmp_path / "out").read_text())
    assert "2 of 12 cases have an empty mask" in caplog.text
    assert "toy_002" in caplog.text and "toy_007" in caplog.text
    case = next(c for c in manifest["cases"] if c["id"] == "toy_002")
    assert case["label_voxels"] == {"1": 0, "2": 0}
    assert "empty mask: foreground crop skipped" in case["fixes"]


def test_too_few_cases_for_split(tmp_path):
    from synthmed.data.toy import write_toy_dataset

    root = write_toy_dataset(tmp_path / "tiny", n_cases=4)
    msg = _refused(tmp_path, [root], "too few cases", folds=5)
    assert "found 4 case(s) in 4 group(s), need at least 7 groups" in msg
    _prepare([root], tmp_path / "out", folds=2)  # 1 test + 1 val + 2 train groups: fine


def test_existing_output_refused_unless_overwrite(tmp_path, toy_msd):
    out = tmp_path / "out"
    _prepare([toy_msd], out)
    (out / "manifest.json").write_text("stale")
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        _prepare([toy_msd], out)
    assert (out / "manifest.json").read_text() == "stale"
    path = prepare_dataset([toy_msd], out, PrepareOptions(**OPTS), overwrite=True, progress=False)
    assert json.loads(path.read_text())["cases"]  # a folder prepare wrote is replaced (see tests/test_outputs.py)


def test_failed_overwrite_keeps_old_output(tmp_path, toy_msd):
    out = tmp_path / "out"
    _prepare([toy_msd], out)
    (toy_msd / "imagesTr" / "toy_000.nii.gz").write_bytes(b"broken")
    with pytest.raises(UserError):
        prepare_dataset([toy_msd], out, PrepareOptions(**OPTS), overwrite=True, progress=False)
    assert (out / "manifest.json").exists()
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def test_unpaired_and_missing_inputs(tmp_path, toy_folders):
    (toy_folders / "labels" / "toy_003.nii.gz").unlink()
    msg = _refused(tmp_path, [toy_folders, tmp_path / "nope"], "Cannot read the input")
    assert "toy_003.nii.gz: image has no mask" in msg and "nope: input not found" in msg


def test_bad_options_name_the_key():
    with pytest.raises(UserError, match="window"):
        make_options(window=(600, -1024))
    with pytest.raises(UserError, match="bogus"):
        make_options(bogus=1)
