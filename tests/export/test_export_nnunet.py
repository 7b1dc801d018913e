"""`synthmed export nnunet`: the export passes nnU-Net v2's own integrity check, its folds keep synthetic
cases out of validation and groups whole, real cases keep their geometry and units, labels are remapped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthmed.cli import main
from synthmed.data.dataset import load_case_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.nnunet_json import restore_mask
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.errors import UserError
from synthmed.export.folds import nnunet_splits
from synthmed.export.nnunet import export_nnunet
from synthmed.sample.synthetic_set import load_synthetic_set
from synthmed.sample.writers import reference_affine, write_synthetic_set
from tests.export.nnunet_check import assert_accepted


def _images(folder: Path, sub: str) -> list[str]:
    return sorted(p.name for p in (folder / sub).iterdir())


def test_export_passes_nnunet_integrity_check_with_real_and_synthetic_cases(toy_pipeline, tmp_path, monkeypatch, capsys):
    manifest = load_manifest(toy_pipeline["manifest"])
    code = main(["export", "nnunet", "--manifest", str(toy_pipeline["prepared"]), "--synthetic",
                 str(toy_pipeline["synthetic"]), "-n", "4", "--out", str(tmp_path / "raw"), "--name", "Toy"])
    assert code == 0
    folder = tmp_path / "raw" / "Dataset501_Toy"
    assert str(folder) in capsys.readouterr().out

    real, test = manifest.split_ids("trainval"), manifest.split_ids("test")
    synthetic = [f"syn_synthetic_{i:04d}" for i in range(4)]
    assert _images(folder, "imagesTr") == sorted(f"{c}_0000.nii.gz" for c in real + synthetic)
    assert _images(folder, "labelsTs") == sorted(f"{c}.nii.gz" for c in test)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "sphere": 1, "core": 2}
    assert dataset["channel_names"] == {"0": "CT"} and dataset["numTraining"] == len(real) + 4
    assert_accepted(folder, monkeypatch)

    splits = json.loads((folder / "splits_final.json").read_text())
    assert len(splits) == 5  # the manifest has no folds: 5 grouped folds of train + val
    assert sorted(c for s in splits for c in s["val"]) == sorted(real)
    assert all(set(synthetic) <= set(s["train"]) and not set(synthetic) & set(s["val"]) for s in splits)


def test_real_cases_keep_their_affine_and_original_units(toy_pipeline, tmp_path):
    manifest = load_manifest(toy_pipeline["manifest"])
    folder = export_nnunet(toy_pipeline["prepared"], [], tmp_path / "raw", dataset_id=7, name="Real")
    case_id = manifest.split_ids("test")[0]
    case = manifest.case(case_id)
    image = nib.load(folder / "imagesTs" / f"{case_id}_0000.nii.gz")
    label = nib.load(folder / "labelsTs" / f"{case_id}.nii.gz")
    np.testing.assert_allclose(image.affine, case["affine"])
    np.testing.assert_allclose(label.affine, case["affine"])

    cached_image, cached_mask = load_case_arrays(manifest, case_id)
    lo, hi = case["intensity"]["lo"], case["intensity"]["hi"]  # the CT window: -1024..600 HU
    hu = np.asarray(image.dataobj)
    assert hu.min() >= lo - 1e-3 and hu.max() <= hi + 1e-3 and hu.max() - hu.min() > 100
    np.testing.assert_allclose((hu - lo) / (hi - lo) * 2 - 1, cached_image[0], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(label.dataobj), cached_mask)
    assert not any((folder / "imagesTr").glob("syn_*"))


def test_folds_follow_the_manifest_and_keep_synthetic_cases_in_training(toy_prepared):
    manifest = load_manifest(toy_prepared)  # 3 folds of the train split
    synthetic = ["syn_a_0000", "syn_a_0001"]
    splits = nnunet_splits(manifest, synthetic)
    assert [s["val"] for s in splits] == manifest.splits["folds"]
    for s in splits:
        assert set(manifest.split_ids("val")) <= set(s["train"])  # the val split trains in every fold
        assert set(synthetic) <= set(s["train"]) and not set(s["train"]) & set(s["val"])
        assert set(s["train"]) | set(s["val"]) == set(manifest.split_ids("trainval")) | set(synthetic)


def test_grouped_folds_never_split_a_patient(toy_prepared):
    manifest = load_manifest(toy_prepared)
    real = manifest.split_ids("trainval")
    for i, case_id in enumerate(real):  # pairs of cases become one patient each
        manifest.case(case_id)["group"] = f"patient{i // 2}"
    splits = nnunet_splits(manifest, ["syn_x_0000"], k=3)
    for s in splits:
        val_groups = {manifest.case(c)["group"] for c in s["val"]}
        train_groups = {manifest.case(c)["group"] for c in s["train"] if not c.startswith("syn_")}
        assert not val_groups & train_groups
        assert "syn_x_0000" in s["train"] and "syn_x_0000" not in s["val"]
    assert sorted(c for s in splits for c in s["val"]) == sorted(real)
    with pytest.raises(UserError, match="--folds 9: .* only 5 group"):
        nnunet_splits(manifest, [], k=9)


def _toy_with_labels_0_1_4(tmp_path: Path) -> Path:
    """A prepared toy set whose 'core' label has value 4 (a gap in the values, as real label maps have)."""
    raw = write_toy_dataset(tmp_path / "raw", layout="msd")
    for path in (raw / "labelsTr").glob("*.nii.gz"):
        img = nib.load(path)
        data = np.asarray(img.dataobj).astype(np.uint8)
        nib.save(nib.Nifti1Image(np.where(data == 2, 4, data).astype(np.uint8), img.affine, img.header), path)
    dataset = json.loads((raw / "dataset.json").read_text())
    dataset["labels"] = {"0": "background", "1": "sphere", "4": "core"}
    (raw / "dataset.json").write_text(json.dumps(dataset))
    options = PrepareOptions(shape=(16, 16, 16), spacing=None, test_fraction=0.2, val_fraction=0.1, folds=3)
    return prepare_dataset([raw], tmp_path / "prepared", options, progress=False)


def _set_from_real_masks(manifest_path: Path, out: Path, n: int = 3) -> Path:
    """A synthetic set (card naming the train split) whose masks are real masks (the manifest's class indices)."""
    manifest = load_manifest(manifest_path)
    train = manifest.split_ids("train")
    pairs = [load_case_arrays(manifest, c) for c in train[:n]]
    card = {"format": "synthmed-card", "format_version": 1, "model": "toy", "manifest": {"sha256": manifest.sha256},
            "trained_on_case_ids": train}
    return write_synthetic_set(out, np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int64),
                               intensity=manifest.preprocessing["intensity"],
                               labels={str(k): v for k, v in manifest.labels.items()},
                               label_values={str(k): v for k, v in manifest.label_values.items()},
                               affine=reference_affine(manifest.preprocessing, [manifest.case(c) for c in train]),
                               modality="CT", card=card)


def test_non_consecutive_labels_are_remapped_in_sampler_and_export_output(tmp_path, monkeypatch):
    manifest_path = _toy_with_labels_0_1_4(tmp_path)
    synthetic = _set_from_real_masks(manifest_path, tmp_path / "syn")

    written = json.loads((synthetic / "dataset.json").read_text())
    assert written["labels"] == {"background": 0, "sphere": 1, "core": 2}
    assert written["synthmed_label_mapping"] == {"0": 0, "1": 1, "4": 2}
    values = set(np.unique(np.asarray(nib.load(synthetic / "labelsTr" / "syn_0000.nii.gz").dataobj)).tolist())
    assert values == {0, 1, 2}
    _, masks, _ = load_synthetic_set(synthetic, (16, 16, 16))  # read back in the manifest's class indices
    assert set(np.unique(masks).tolist()) == {0, 1, 2}
    assert set(np.unique(restore_mask(masks, written)).tolist()) == {0, 1, 4}  # and in the source values
    assert_accepted(synthetic, monkeypatch)

    folder = export_nnunet(manifest_path, [synthetic], tmp_path / "raw", name="Gap")
    exported = json.loads((folder / "dataset.json").read_text())
    assert exported["labels"] == written["labels"]
    assert exported["synthmed_label_mapping"] == {"0": 0, "1": 1, "4": 2}
    assert json.loads((folder / "synthmed_export.json").read_text())["label_mapping"] == {"0": 0, "1": 1, "4": 2}
    for path in list((folder / "labelsTr").iterdir()) + list((folder / "labelsTs").iterdir()):
        assert set(np.unique(np.asarray(nib.load(path).dataobj)).tolist()) <= {0, 1, 2}, path.name
    assert_accepted(folder, monkeypatch)


def test_sampler_dataset_json_passes_nnunet_integrity_check(toy_pipeline, tmp_path, monkeypatch):
    copy = Path(shutil.copytree(toy_pipeline["synthetic"], tmp_path / "synthetic"))
    dataset = json.loads((copy / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["labels"]["background"] == 0
    assert_accepted(copy, monkeypatch)

    # the dataset.json synthmed wrote before (labels named after the manifest, a gap in the values) is refused
    dataset["labels"] = {"bg": 0, "sphere": 1, "core": 3}
    (copy / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(RuntimeError, match="Background label not declared"):
        assert_accepted(copy, monkeypatch)


def test_2d_export_passes_nnunet_integrity_check(toy_prepared_2d, tmp_path, monkeypatch):
    manifest = load_manifest(toy_prepared_2d)
    train = manifest.split_ids("train")
    pairs = [load_case_arrays(manifest, c) for c in train[:3]]
    card = {"format": "synthmed-card", "format_version": 1, "model": "toy", "manifest": {"sha256": manifest.sha256},
            "trained_on_case_ids": train}
    synthetic = write_synthetic_set(
        tmp_path / "syn2d", np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int64),
        intensity=manifest.preprocessing["intensity"], labels={str(k): v for k, v in manifest.labels.items()},
        affine=None, modality=manifest.preprocessing["modality"], card=card, bit_depth=manifest.preprocessing["bit_depth"])
    folder = export_nnunet(toy_prepared_2d, [synthetic], tmp_path / "raw", dataset_id=12, name="Discs")
    assert json.loads((folder / "dataset.json").read_text())["file_ending"] == ".png"
    assert len(list((folder / "imagesTr").glob("syn_syn2d_*_0000.png"))) == 3
    assert_accepted(folder, monkeypatch)


def test_sets_with_the_same_folder_name_get_distinct_prefixes_and_a_rerun_needs_overwrite(toy_pipeline, tmp_path):
    other = Path(shutil.copytree(toy_pipeline["synthetic"], tmp_path / "b" / "synthetic"))
    folder = export_nnunet(toy_pipeline["prepared"], [toy_pipeline["synthetic"], other], tmp_path / "raw", n=2)
    names = _images(folder, "labelsTr")
    assert [n for n in names if n.startswith("syn_")] == [
        "syn_synthetic2_0000.nii.gz", "syn_synthetic2_0001.nii.gz", "syn_synthetic_0000.nii.gz", "syn_synthetic_0001.nii.gz"]
    provenance = json.loads((folder / "synthmed_export.json").read_text())
    assert provenance["synthetic_sets"][1]["cases"] == {"syn_synthetic2_0000": "syn_0000", "syn_synthetic2_0001": "syn_0001"}

    with pytest.raises(UserError, match="already exists"):
        export_nnunet(toy_pipeline["prepared"], [other], tmp_path / "raw", n=1)
    export_nnunet(toy_pipeline["prepared"], [other], tmp_path / "raw", n=1, overwrite=True)
    assert len([n for n in _images(folder, "labelsTr") if n.startswith("syn_")]) == 1
    with pytest.raises(UserError, match="given more than once"):
        export_nnunet(toy_pipeline["prepared"], [other, other], tmp_path / "raw2")
