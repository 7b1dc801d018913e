"""The three input layouts (and nnU-Net v2 naming) give the same cases."""

import json

import numpy as np
import pytest

from synthmed.data.dataset import load_arrays
from synthmed.data.discover import discover_sources, parse_labels
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.errors import UserError

OPTS = PrepareOptions(shape=(16, 16, 16), folds=2)


def test_three_layouts_give_same_cases(tmp_path, toy_msd, toy_folders, toy_datalist):
    results = []
    for name, inp in [("msd", toy_msd), ("folders", toy_folders), ("datalist", toy_datalist)]:
        m = load_manifest(prepare_dataset([inp], tmp_path / f"out_{name}", OPTS, progress=False))
        assert m.data["sources"][0]["kind"] == name
        results.append((m, load_arrays(m, [c["id"] for c in m.cases])))
    (m0, (img0, msk0)), rest = results[0], results[1:]
    for m, (img, msk) in rest:
        assert [c["id"] for c in m.cases] == [c["id"] for c in m0.cases]
        assert m.splits == m0.splits
        np.testing.assert_array_equal(img, img0)
        np.testing.assert_array_equal(msk, msk0)
    assert m0.labels == {0: "background", 1: "sphere", 2: "core"}
    # folders layout declares no labels: the labels seen are used
    assert results[1][0].labels == {0: "background", 1: "label_1", 2: "label_2"}


def test_nnunet_v2_names_and_labels(tmp_path, toy_msd):
    for f in (toy_msd / "imagesTr").glob("*.nii.gz"):
        f.rename(f.with_name(f.name.replace(".nii.gz", "_0000.nii.gz")))
    (toy_msd / "imagesTr" / "._toy_000_0000.nii.gz").write_bytes(b"macOS resource fork")  # ignored
    meta = json.loads((toy_msd / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "sphere": 1, "core": 2}
    (toy_msd / "dataset.json").write_text(json.dumps(meta))
    (src,) = discover_sources([toy_msd])
    assert src.kind == "msd" and src.name == "toy" and src.labels == {0: "background", 1: "sphere", 2: "core"}
    assert [c.id for c in src.cases] == [f"toy_{i:03d}" for i in range(12)]
    assert src.cases[0].image.name == "toy_000_0000.nii.gz"


def test_channel_gap_refused(tmp_path, toy_msd):
    f = toy_msd / "imagesTr" / "toy_000.nii.gz"
    f.rename(f.with_name("toy_000_0000.nii.gz"))
    (toy_msd / "imagesTr" / "toy_000_0002.nii.gz").write_bytes(b"")
    with pytest.raises(UserError, match=r"toy_000_XXXX: channel files \[0, 2\] found; expected 0..1"):
        discover_sources([toy_msd])


def test_several_inputs_are_sources(tmp_path):
    from synthmed.data.toy import write_toy_dataset

    a = write_toy_dataset(tmp_path / "siteA", n_cases=6, layout="folders")
    b = write_toy_dataset(tmp_path / "siteB", n_cases=6, layout="folders", seed=1)
    with pytest.raises(UserError, match="case id 'toy_000' already used"):
        discover_sources([a, b])
    for f in sorted((b / "images").iterdir()) + sorted((b / "labels").iterdir()):
        f.rename(f.with_name("b" + f.name))
    m = load_manifest(prepare_dataset([a, b], tmp_path / "out", OPTS, progress=False))
    assert [s["name"] for s in m.data["sources"]] == ["siteA", "siteB"]
    assert {c["source"] for c in m.cases} == {"siteA", "siteB"}


def test_parse_labels_both_forms():
    assert parse_labels({"0": "background", "1": "a"}, "x") == {0: "background", 1: "a"}
    assert parse_labels({"background": 0, "a": 1}, "x") == {0: "background", 1: "a"}
    with pytest.raises(UserError, match="x: label entry"):
        parse_labels({"whole": [1, 2]}, "x")
