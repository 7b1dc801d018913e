"""`synthmed analyze` and the prepare/analyze sub-commands."""

import argparse
import json

import pytest

from synthmed.data.analyze import analyze_dataset
from synthmed.data.cli import add_analyze_parser, add_prepare_parser, parse_labels_option
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError


def _parser():
    ap = argparse.ArgumentParser(prog="synthmed")
    sub = ap.add_subparsers()
    add_prepare_parser(sub)
    add_analyze_parser(sub)
    return ap


def test_analyze_raw_and_prepared(tmp_path, toy_msd, toy_prepared, capsys):
    out = tmp_path / "analysis"
    result = analyze_dataset([toy_msd, toy_prepared.parent], out_dir=out)
    text = capsys.readouterr().out
    assert "== toy (msd:" in text and "label 1 sphere mm3" in text and "train / val / test" in text
    raw, prepared = result["sources"]
    assert raw["summary"]["n_cases"] == 12 and raw["summary"]["shape"]["max"] == [16, 16, 16]
    assert raw["summary"]["spacing"]["median"] == [1.5, 1.5, 1.5]
    case = raw["cases"]["toy_000"]
    assert case["label_mm3"]["1"] == pytest.approx(case["label_voxels"]["1"] * 1.5**3)
    assert prepared["kind"] == "prepared" and prepared["summary"]["n_cases"] == 12
    assert sorted(p.name for p in out.iterdir()) == [
        ".synthmed-output", "analysis.json", "intensity_range.png", "label_volumes.png", "shapes.png"]
    assert json.loads((out / "analysis.json").read_text())["sources"][0]["name"] == "toy"
    with pytest.raises(UserError, match="already exists"):
        analyze_dataset([toy_msd], out_dir=out)


def test_analyze_reports_unreadable_case(toy_msd, capsys):
    bad = toy_msd / "imagesTr" / "toy_001.nii.gz"
    bad.write_bytes(b"junk")
    result = analyze_dataset([toy_msd])
    assert result["sources"][0]["summary"]["n_cases"] == 11
    assert str(bad) in capsys.readouterr().out


def test_prepare_cli(tmp_path, toy_msd, capsys):
    out = tmp_path / "prep"
    args = _parser().parse_args([
        "prepare", str(toy_msd), "--out", str(out), "--spacing", "3", "--shape", "8", "8", "8",
        "--intensity", "percentile", "--percentiles", "1", "99", "--margin", "0", "--labels", "0,1,2",
        "--test-fraction", "0.25", "--val-fraction", "0", "--folds", "3", "--seed", "7",
    ])
    assert args.func(args) == 0
    assert "Prepared 12 cases" in capsys.readouterr().out
    m = load_manifest(out)
    assert m.preprocessing["spacing"] == [3.0, 3.0, 3.0] and m.preprocessing["shape"] == [8, 8, 8]
    assert m.preprocessing["intensity"]["mode"] == "percentile"
    assert m.preprocessing["intensity"]["lower_pct"] == 1.0
    assert m.labels == {0: "background", 1: "sphere", 2: "core"}  # names kept from dataset.json
    assert m.splits["seed"] == 7 and len(m.splits["test"]) == 3 and m.splits["val"] == []
    assert m.case("toy_000")["spacing"] == pytest.approx([3.0, 3.0, 3.0])
    args = _parser().parse_args(["prepare", str(toy_msd), "--out", str(out), "--spacing", "none"])
    with pytest.raises(UserError, match="already exists"):
        args.func(args)


def test_cli_option_errors():
    with pytest.raises(UserError, match="'x' is not an integer label"):
        parse_labels_option("0,x")
    assert parse_labels_option("0,1=tumour") == {0: "background", 1: "tumour"}
    ap = _parser()
    args = ap.parse_args(["prepare", "in", "--out", "o", "--spacing", "1", "2"])
    with pytest.raises(UserError, match="--spacing 1 2: expected 3 numbers"):
        args.func(args)
