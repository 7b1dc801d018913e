"""Pairing by --mask-suffix, the one unpaired-files problem, given splits (datalist lists, imagesTs,
--split-file, nnU-Net splits_final.json) and datalist ids made from paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from synthmed.cli import main
from synthmed.data.discover import discover_sources
from synthmed.data.prepare import make_options, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.data.toy2d import write_toy_2d_dataset
from synthmed.errors import UserError

OPTS_3D = dict(shape=(16, 16, 16), folds=0, test_fraction=0.2, val_fraction=0.2)


def _hc18_like(tmp_path: Path, n: int = 8) -> Path:
    """One folder holding ``NNN_HC.png`` images and ``NNN_HC_Mask.png`` masks, as HC18 ships."""
    toy = write_toy_2d_dataset(tmp_path / "toy2d", n=n, size=32)
    flat = tmp_path / "hc18"
    flat.mkdir()
    for k, image in enumerate(sorted((toy / "images").glob("*.png"))):
        shutil.copy(image, flat / f"{k:03d}_HC.png")
        shutil.copy(toy / "masks" / image.name, flat / f"{k:03d}_HC_Mask.png")
    return flat


def test_mask_suffix_pairs_one_folder_of_images_and_masks(tmp_path):
    flat = _hc18_like(tmp_path)
    manifest = prepare_dataset([flat], tmp_path / "out", make_options(mask_suffix="_Mask", folds=0), progress=False)
    cases = json.loads(manifest.read_text())["cases"]
    assert [c["id"] for c in cases] == [f"{k:03d}_HC" for k in range(8)]
    assert all(Path(c["label_file"]).name == f"{c['id']}_Mask.png" for c in cases)


def test_unpaired_files_are_one_problem_with_how_to_pair_them(tmp_path):
    flat = _hc18_like(tmp_path, n=12)
    (tmp_path / "set").mkdir()
    shutil.move(flat, tmp_path / "set" / "images")
    shutil.copytree(tmp_path / "set" / "images", tmp_path / "set" / "masks")
    for p in (tmp_path / "set" / "images").glob("*_Mask.png"):
        p.unlink()
    for p in (tmp_path / "set" / "masks").glob("*_HC.png"):
        p.unlink()
    with pytest.raises(UserError) as err:
        discover_sources([tmp_path / "set"])
    msg = str(err.value)
    assert "(1 problem)" in msg and "12 image(s) without a mask and 12 mask(s) without an image" in msg
    assert msg.count("image has no mask") == 3 and msg.count("mask has no image") == 3  # a few examples
    assert "--mask-suffix _Mask would pair 12" in msg and "datalist" in msg
    assert len(discover_sources([tmp_path / "set"], mask_suffix="_Mask")[0].cases) == 12  # and it does


def test_mask_suffix_pairs_3d_volumes(tmp_path, toy_folders):
    for label in (toy_folders / "labels").glob("*.nii.gz"):
        label.rename(label.with_name(label.name.replace(".nii.gz", "_seg.nii.gz")))
    sources = discover_sources([toy_folders], mask_suffix="_seg")
    assert [c.id for c in sources[0].cases][:2] == ["toy_000", "toy_001"]


def _datalist_with_lists(toy_datalist: Path) -> dict:
    data = json.loads(toy_datalist.read_text())
    data["validation"], data["testing"] = data["training"][8:10], data["training"][10:]
    data["training"] = data["training"][:8]
    toy_datalist.write_text(json.dumps(data))
    return data


def test_datalist_validation_and_testing_lists_become_the_splits(toy_datalist, tmp_path, capsys):
    data = _datalist_with_lists(toy_datalist)
    manifest = prepare_dataset([toy_datalist], tmp_path / "out", make_options(**{**OPTS_3D, "folds": 2}), progress=False)
    splits = json.loads(manifest.read_text())["splits"]
    assert splits["val"] == [e["id"] for e in data["validation"]] and splits["test"] == ["toy_010", "toy_011"]
    assert splits["train"] == [f"toy_{k:03d}" for k in range(8)] and sorted(sum(splits["folds"], [])) == splits["train"]
    assert splits["given"] == ["val", "test"]
    assert "Given: val, test by datalist testing list, datalist validation list; the rest is train." in capsys.readouterr().out


def test_imagesTs_is_the_test_split_and_val_is_seeded_from_the_rest(toy_msd, tmp_path, capsys):
    for sub in ("imagesTs", "labelsTs"):
        (toy_msd / sub).mkdir()
    for k in (10, 11):
        for a, b in (("imagesTr", "imagesTs"), ("labelsTr", "labelsTs")):
            shutil.move(toy_msd / a / f"toy_{k:03d}.nii.gz", toy_msd / b / f"toy_{k:03d}.nii.gz")
    manifest = prepare_dataset([toy_msd], tmp_path / "out", make_options(**OPTS_3D), progress=False)
    splits = json.loads(manifest.read_text())["splits"]
    assert splits["test"] == ["toy_010", "toy_011"] and len(splits["val"]) == 2 and len(splits["train"]) == 8
    assert "Given: test by imagesTs/labelsTs; val seeded from the rest." in capsys.readouterr().out


def test_split_file_of_ids_and_nnunet_splits_final(toy_msd, tmp_path):
    ids = [f"toy_{k:03d}" for k in range(12)]
    plain = tmp_path / "split.json"
    plain.write_text(json.dumps({"train": ids[:6], "validation": ids[6:9], "test": ids[9:]}))
    splits = json.loads(prepare_dataset([toy_msd], tmp_path / "a", make_options(**OPTS_3D, split_file=plain),
                                        progress=False).read_text())["splits"]
    assert (splits["train"], splits["val"], splits["test"]) == (ids[:6], ids[6:9], ids[9:])
    final = tmp_path / "splits_final.json"  # nnU-Net: 3 folds over the first 9 cases; the rest is test
    folds = [ids[0:3], ids[3:6], ids[6:9]]
    final.write_text(json.dumps([{"train": sorted(set(ids[:9]) - set(f)), "val": f} for f in folds]))
    splits = json.loads(prepare_dataset([toy_msd], tmp_path / "b", make_options(**OPTS_3D, split_file=final),
                                        progress=False).read_text())["splits"]
    assert splits["folds"] == folds and splits["train"] == ids[:9] and splits["k_folds"] == 3
    assert splits["test"] == ids[9:] and splits["val"] == []


def test_given_splits_still_keep_groups_together(toy_datalist, tmp_path):
    data = _datalist_with_lists(toy_datalist)
    data["training"][0]["group"] = data["testing"][0]["group"] = "patient7"
    toy_datalist.write_text(json.dumps(data))
    manifest = prepare_dataset([toy_datalist], tmp_path / "a", make_options(**OPTS_3D), progress=False)
    assert "toy_000" in json.loads(manifest.read_text())["splits"]["test"]  # follows its group's given split
    data["validation"][0]["group"] = "patient7"  # now the given lists themselves disagree
    toy_datalist.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"group 'patient7' is in test and val \(test: toy_010; val: toy_008\)"):
        prepare_dataset([toy_datalist], tmp_path / "b", make_options(**OPTS_3D), progress=False)
    assert not (tmp_path / "b").exists()


def test_split_file_with_unknown_ids_is_refused(toy_msd, tmp_path, capsys):
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps({"test": ["toy_000", "nobody"]}))
    code = main(["prepare", str(toy_msd), "--out", str(tmp_path / "out"), "--split-file", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and f"--split-file {bad}: 1 id(s) are not case ids of the inputs: nobody" in err


def test_datalist_ids_come_from_the_patient_folder_when_file_names_repeat(tmp_path, capsys):
    """BraTS-like: one folder per patient, every file named alike, no 'id' keys."""
    raw = write_toy_dataset(tmp_path / "flat", n_cases=6, layout="folders")
    entries = []
    for k in range(6):
        patient = tmp_path / "brats" / f"Patient_{k:02d}"
        patient.mkdir(parents=True)
        (patient / "flair.nii.gz").symlink_to(raw / "images" / f"toy_{k:03d}.nii.gz")  # links: named as listed
        shutil.copy(raw / "labels" / f"toy_{k:03d}.nii.gz", patient / "seg.nii.gz")
        entries.append({"image": f"Patient_{k:02d}/flair.nii.gz", "label": f"Patient_{k:02d}/seg.nii.gz"})
    datalist = tmp_path / "brats" / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}))
    manifest = prepare_dataset([datalist], tmp_path / "out", make_options(**OPTS_3D, modality="MRI"), progress=False)
    assert [c["id"] for c in json.loads(manifest.read_text())["cases"]] == [f"Patient_{k:02d}" for k in range(6)]
    assert "ids of 6 of 6 entries made from their folder names (the file names repeat)" in capsys.readouterr().out
