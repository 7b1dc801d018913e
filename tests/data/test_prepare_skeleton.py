"""What `prepare_dataset` does alike for every case reader: 3D volumes, 2D images and slices of volumes."""

import logging

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import make_options, prepare_dataset
from synthmed.data.toy2d import write_toy_2d_dataset
from synthmed.errors import UserError

KINDS = {
    "volumes": {"shape": (16, 16, 16)},
    "images": {},
    "slices": {"slices": "axial", "shape": (16, 16), "max_slices": 2},
}


@pytest.fixture(params=list(KINDS))
def kind_input(request, tmp_path, toy_msd):
    """(kind, raw dataset, its mask folder, options) for each kind of input, 12 pairs each."""
    if request.param == "images":
        raw = write_toy_2d_dataset(tmp_path / "raw2d", n=12, size=16)
        return request.param, raw, raw / "masks", ".png"
    return request.param, toy_msd, toy_msd / "labelsTr", ".nii.gz"


def _options(kind, **kw):
    return make_options(**{**KINDS[kind], "test_fraction": 0.2, "val_fraction": 0.1, "folds": 2, **kw})


def _empty_mask(path):
    if path.name.endswith(".nii.gz"):
        old = nib.load(path)
        nib.save(nib.Nifti1Image(np.zeros(old.shape, np.uint8), old.affine), path)
    else:
        from PIL import Image

        Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)


def test_every_problem_in_one_message_and_nothing_written(tmp_path, kind_input):
    kind, raw, masks, suffix = kind_input
    bad = masks / f"toy{'2d' if kind == 'images' else ''}_003{suffix}"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        prepare_dataset([raw], out, _options(kind, group_regex=r"(toy)"), progress=False)
    msg = str(err.value)
    assert msg.startswith("1 of 12 cases failed the checks; nothing was written (2 problems)")
    assert "too few cases for the requested split: found 12 case(s) in 1 group(s)" in msg
    assert str(bad) in msg
    assert not out.exists() and not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def test_empty_masks_warned_counted_and_summarised(tmp_path, kind_input, caplog, capsys):
    kind, raw, masks, suffix = kind_input
    for name in ("001", "005"):
        _empty_mask(masks / f"toy{'2d' if kind == 'images' else ''}_{name}{suffix}")
    with caplog.at_level(logging.WARNING):
        path = prepare_dataset([raw], tmp_path / "out", _options(kind), progress=False)
    m = load_manifest(path)
    empty = [c["id"] for c in m.cases if not any(c["label_voxels"].values())]
    element = "voxel" if kind == "volumes" else "pixel"
    assert f"{len(empty)} of {len(m.cases)} cases have an empty mask (no labelled {element})" in caplog.text
    printed = capsys.readouterr().out
    assert f" {len(empty)} empty mask(s)" in printed and printed.rstrip().endswith(f"Manifest: {path}")
    assert len(empty) >= 2 and {f"cases/{c['id']}.npz" for c in m.cases} == {
        f"cases/{p.name}" for p in (path.parent / "cases").iterdir()
    }


def test_slices_volumes_without_slices_warned_and_none_at_all_refused(tmp_path, toy_msd, caplog):
    labels = sorted((toy_msd / "labelsTr").iterdir())
    for path in labels[:2]:
        _empty_mask(path)
    options = _options("slices", foreground_slices_only=True, max_slices=None, folds=0)
    with caplog.at_level(logging.WARNING):
        m = load_manifest(prepare_dataset([toy_msd], tmp_path / "out", options, progress=False))
    assert "2 volume(s) gave no slice (no labelled voxel): toy_000, toy_001" in caplog.text
    assert {c["volume_id"] for c in m.cases} == {f"toy_{i:03d}" for i in range(2, 12)}
    for path in labels[2:]:
        _empty_mask(path)
    with pytest.raises(UserError, match="no slices were taken"):
        prepare_dataset([toy_msd], tmp_path / "none", options, progress=False)
    assert not (tmp_path / "none").exists()


def test_volumes_cropped_to_a_small_shape_warn_and_count_lost_voxels(tmp_path, toy_msd, caplog, capsys):
    options = make_options(shape=(6, 6, 6), margin=0, folds=0)
    with caplog.at_level(logging.WARNING):
        m = load_manifest(prepare_dataset([toy_msd], tmp_path / "out", options, progress=False))
    lost = [c for c in m.cases if c["foreground_lost_voxels"] > 0]
    assert lost and f"{len(lost)} of 12 cases lost labelled voxels to the crop to shape 6x6x6" in caplog.text
    assert f"0 empty mask(s); {len(lost)} case(s) lost labelled voxels to the crop." in capsys.readouterr().out
