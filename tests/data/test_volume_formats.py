"""3D volumes as NRRD, MetaImage and DICOM series: the same cases prepared from each format give the
NIfTI path's geometry and arrays; broken DICOM series are refused naming their folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.prepare import make_options, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.errors import UserError
from tests.data.volume_files import nifti_to, nifti_to_dicom

OPTS = dict(shape=(16, 16, 16), folds=0, test_fraction=0.25, val_fraction=0.25, intensity="window")


def _oblique_affine(k: int) -> np.ndarray:
    """Rotated 20° about z, flipped in x, anisotropic voxels, case-dependent origin: no axis-aligned luck."""
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [10.0 + k, -20.5, 33.25]
    return affine


@pytest.fixture(scope="module")
def nifti_set(tmp_path_factory) -> Path:
    """An MSD folder of 4 toy cases with integer CT values and oblique affines (DICOM stores int16)."""
    raw = write_toy_dataset(tmp_path_factory.mktemp("formats") / "nifti", n_cases=4, layout="msd")
    for k, image in enumerate(sorted((raw / "imagesTr").glob("*.nii.gz"))):
        label = raw / "labelsTr" / image.name
        affine = _oblique_affine(k)
        data = np.rint(np.asarray(nib.load(image).dataobj)).astype(np.int16)
        nib.save(nib.Nifti1Image(data, affine), image)
        nib.save(nib.Nifti1Image(np.asarray(nib.load(label).dataobj).astype(np.uint8), affine), label)
    return raw


def _convert(nifti_set: Path, out: Path, image_format: str, label_suffix: str) -> Path:
    """The MSD folder with its images as `image_format` ('dicom' or a suffix) and labels as `label_suffix`."""
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    shutil.copy(nifti_set / "dataset.json", out)
    for image in sorted((nifti_set / "imagesTr").glob("*.nii.gz")):
        case = image.name[: -len(".nii.gz")]
        if image_format == "dicom":
            nifti_to_dicom(image, out / "imagesTr" / case)
        else:
            nifti_to(image, out / "imagesTr" / f"{case}{image_format}")
        nifti_to(nifti_set / "labelsTr" / image.name, out / "labelsTr" / f"{case}{label_suffix}")
    return out


def _prepared(raw: Path, out: Path) -> tuple[dict, dict]:
    manifest = prepare_dataset([raw], out, make_options(**OPTS), progress=False)
    data = json.loads(manifest.read_text())
    arrays = {c["id"]: dict(np.load(out / c["cache"])) for c in data["cases"]}
    return {c["id"]: c for c in data["cases"]}, arrays


@pytest.mark.parametrize("image_format,label_suffix", [
    ("dicom", ".nii.gz"), (".nrrd", ".nrrd"), (".mha", ".mha"), (".nhdr", ".mhd"),
])
def test_each_format_gives_the_nifti_geometry_and_arrays(nifti_set, tmp_path, image_format, label_suffix):
    reference, ref_arrays = _prepared(nifti_set, tmp_path / "ref")
    raw = _convert(nifti_set, tmp_path / "raw", image_format, label_suffix)
    cases, arrays = _prepared(raw, tmp_path / "out")
    assert sorted(cases) == sorted(reference) == ["toy_000", "toy_001", "toy_002", "toy_003"]
    # DICOM's slice axis is always row x column (right-handed): this left-handed grid comes back with its
    # slices in reverse order, i.e. the same voxels in space, and the same arrays once oriented to RAS
    flip_k = np.diag([1.0, 1.0, -1.0, 1.0])
    flip_k[2, 3] = 15
    for case_id, ref in reference.items():
        original = np.asarray(ref["original_affine"]) @ (flip_k if image_format == "dicom" else np.eye(4))
        assert np.abs(np.subtract(cases[case_id]["original_affine"], original)).max() < 1e-4, case_id
        assert np.abs(np.subtract(cases[case_id]["affine"], ref["affine"])).max() < 1e-4, case_id
        np.testing.assert_allclose(cases[case_id]["original_spacing"], [0.8, 0.9, 2.5], atol=1e-4)
        np.testing.assert_allclose(arrays[case_id]["image"], ref_arrays[case_id]["image"], atol=1e-5)
        assert (arrays[case_id]["mask"] == ref_arrays[case_id]["mask"]).all()
    if image_format == "dicom":
        assert cases["toy_000"]["image_file"] == str(raw / "imagesTr" / "toy_000")  # the series folder
        assert any("mask axes reordered" in fix for fix in cases["toy_000"]["fixes"])


@pytest.mark.parametrize("damage,message", [
    (dict(drop=(6,)), "1 missing DICOM slice(s) in 15"),
    (dict(shift={6: 0.7}), "inconsistent DICOM slice spacing"),
    (dict(series="2"), "holds 2 DICOM series"),
])
def test_broken_dicom_series_is_refused_naming_its_folder(nifti_set, tmp_path, damage, message):
    raw = _convert(nifti_set, tmp_path / "raw", "dicom", ".nii.gz")
    folder = raw / "imagesTr" / "toy_001"
    if "series" in damage:  # a second series written into the same folder
        nifti_to_dicom(nifti_set / "imagesTr" / "toy_001.nii.gz", folder, **damage)
    else:
        shutil.rmtree(folder)
        nifti_to_dicom(nifti_set / "imagesTr" / "toy_001.nii.gz", folder, **damage)
    with pytest.raises(UserError, match="1 of 4 cases failed") as err:
        prepare_dataset([raw], tmp_path / "out", make_options(**OPTS), progress=False)
    assert f"{folder}: {message}" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_truncated_nrrd_is_refused_naming_the_file(nifti_set, tmp_path):
    raw = _convert(nifti_set, tmp_path / "raw", ".nrrd", ".nrrd")
    bad = raw / "labelsTr" / "toy_002.nrrd"
    bad.write_bytes(bad.read_bytes()[:-500])
    with pytest.raises(UserError, match=f"{bad}: unreadable or truncated volume"):
        prepare_dataset([raw], tmp_path / "out", make_options(**OPTS), progress=False)
