"""Label values with gaps ({0, 1, 4}, BraTS's {0, 1, 2, 4}) are prepared as class indices 0..L-1."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.dataset import load_case_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.errors import UserError

OPTIONS = {"shape": (16, 16, 16), "spacing": None, "test_fraction": 0.2, "val_fraction": 0.1, "folds": 0}


def write_gapped_toy(root: Path, layout: str = "folders", n_cases: int = 12) -> Path:
    """The toy set with its inner 'core' label (value 2) rewritten as value 4: labels {0, 1, 4}."""
    raw = write_toy_dataset(root, n_cases=n_cases, layout=layout)
    for path in sorted((root / ("labels" if layout == "folders" else "labelsTr")).glob("*.nii.gz")):
        img = nib.load(path)
        mask = np.asarray(img.dataobj).astype(np.uint8)
        nib.save(nib.Nifti1Image(np.where(mask == 2, 4, mask).astype(np.uint8), img.affine), path)
    return raw


@pytest.mark.parametrize("declared", [None, {0: "background", 1: "sphere", 4: "core"}])
def test_gapped_labels_are_written_as_class_indices_with_their_source_values(tmp_path, capsys, declared):
    raw = write_gapped_toy(tmp_path / "raw")
    path = prepare_dataset([raw], tmp_path / "prepared", PrepareOptions(**OPTIONS, labels=declared), progress=False)
    assert "Label values 0, 1, 4 are written as class indices 0, 1, 2" in capsys.readouterr().out

    data = json.loads(path.read_text())
    names = ["background", "label_1", "label_4"] if declared is None else ["background", "sphere", "core"]
    assert data["labels"] == dict(zip(("0", "1", "2"), names))
    assert data["label_values"] == {"0": 0, "1": 1, "2": 4}
    manifest = load_manifest(path)
    assert manifest.labels == dict(enumerate(names)) and manifest.label_values == {0: 0, 1: 1, 2: 4}

    source = nib.load(raw / "labels" / "toy_000.nii.gz").get_fdata()  # 16^3 with spacing kept: voxel for voxel
    _, mask = load_case_arrays(manifest, "toy_000")
    assert set(np.unique(mask).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(np.array([0, 1, -1, -1, 2])[source.astype(int)], mask)
    entry = manifest.case("toy_000")
    assert entry["label_voxels"] == {"1": int((source == 1).sum()), "2": int((source == 4).sum())}


def test_consecutive_labels_are_kept_and_not_reported(tmp_path, capsys):
    path = prepare_dataset([write_toy_dataset(tmp_path / "raw")], tmp_path / "prepared", PrepareOptions(**OPTIONS),
                           progress=False)
    assert "class indices" not in capsys.readouterr().out
    assert json.loads(path.read_text())["label_values"] == {"0": 0, "1": 1, "2": 2}


def test_ignore_label_goes_last_as_nnunet_needs(tmp_path):
    raw = write_gapped_toy(tmp_path / "raw")
    labels = {0: "background", 1: "ignore", 4: "core"}
    manifest = load_manifest(prepare_dataset([raw], tmp_path / "p", PrepareOptions(**OPTIONS, labels=labels), progress=False))
    assert manifest.labels == {0: "background", 1: "core", 2: "ignore"}
    assert manifest.label_values == {0: 0, 1: 4, 2: 1}


def _rewrite(path: Path, **changes) -> Path:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


def test_manifest_round_trips_and_an_old_consecutive_manifest_still_loads(toy_prepared):
    manifest = load_manifest(toy_prepared)
    assert manifest.label_values == {0: 0, 1: 1, 2: 2}
    again = load_manifest(_rewrite(toy_prepared, label_values={str(k): v for k, v in manifest.label_values.items()}))
    assert again.labels == manifest.labels and again.label_values == manifest.label_values

    old = load_manifest(_rewrite(toy_prepared, label_values=None))  # written before label_values existed
    assert old.labels == {0: "background", 1: "sphere", 2: "core"} and old.label_values == {0: 0, 1: 1, 2: 2}


@pytest.mark.parametrize("changes,message", [
    ({"labels": {"0": "background", "1": "sphere", "4": "core"}, "label_values": None}, "run `synthmed prepare` again"),
    ({"label_values": {"0": 0, "1": 4}}, "its own source value"),
    ({"label_values": {"0": 0, "1": 4, "2": 4}}, "its own source value"),
    ({"label_values": {"0": 0, "1": "x", "2": 4}}, "integer values"),
    ({"labels": {"0": "background", "1": "ignore", "2": "core"}, "label_values": None}, "not the last class index"),
])
def test_manifests_whose_labels_are_not_class_indices_are_refused(toy_prepared, changes, message):
    with pytest.raises(UserError, match=message) as err:
        load_manifest(_rewrite(toy_prepared, **changes))
    assert str(toy_prepared) in str(err.value)
