"""`synthmed analyze` on 2D data and the 2D flags of `synthmed prepare`."""

import argparse

import pytest

from synthmed.data.analyze import analyze_dataset
from synthmed.data.cli import add_analyze_parser, add_prepare_parser
from synthmed.data.manifest import load_manifest
from synthmed.data.toy2d import write_toy_2d_dataset


def _parser():
    ap = argparse.ArgumentParser(prog="synthmed")
    sub = ap.add_subparsers()
    add_prepare_parser(sub)
    add_analyze_parser(sub)
    return ap


def test_analyze_raw_and_prepared_2d(tmp_path, toy_prepared_2d, capsys):
    raw = write_toy_2d_dataset(tmp_path / "raw", n=6, size=(20, 30), fmt="jpg", rgb=True)
    out = tmp_path / "analysis"
    result = analyze_dataset([raw, toy_prepared_2d.parent], out_dir=out)
    text = capsys.readouterr().out
    raw_src, prepared = result["sources"]
    s = raw_src["summary"]
    assert raw_src["dims"] == 2 and raw_src["size_key"] == "label_input_px"
    assert s["n_cases"] == 6 and s["shape"]["max"] == [20, 30] and s["distinct_sizes"] == 1
    assert s["pixel_types"] == {"uint8": 6} and s["color_images"] == 6
    assert s["mask_rules"] == {"jpeg_threshold": 6} and s["jpeg_midgrey_pixels"] >= 0
    assert "JPEG mask mid-grey pixels" in text and "colour images" in text and "label 1 pixels" in text
    assert prepared["dims"] == 2 and prepared["size_key"] == "label_input_px"
    assert prepared["summary"]["splits"] == {"train": 17, "val": 2, "test": 5}
    case = next(iter(prepared["cases"].values()))
    assert case["label_input_px"]["1"] == case["label_voxels"]["1"]  # 1 input pixel per output pixel
    assert sorted(p.name for p in out.iterdir()) == [
        ".synthmed-output", "analysis.json", "intensity_range.png", "label_volumes.png", "shapes.png"]


def test_analyze_slices_reports_mm2(tmp_path, toy_msd, capsys):
    args = _parser().parse_args([
        "prepare", str(toy_msd), "--out", str(tmp_path / "s"), "--slices", "2", "--shape", "16", "16",
        "--foreground-slices-only", "--max-slices", "4", "--folds", "2",
    ])
    assert args.slices == "axial" and args.func(args) == 0
    m = load_manifest(tmp_path / "s")
    assert m.preprocessing["slicing"]["max_slices"] == 4 and len(m.cases) == 12 * 4
    result = analyze_dataset([tmp_path / "s"], print_report=False)
    src = result["sources"][0]
    assert src["size_key"] == "label_mm2"
    case = next(iter(src["cases"].values()))
    assert case["label_mm2"]["1"] == pytest.approx(case["label_voxels"]["1"] * 1.5 * 1.5)


def test_prepare_cli_2d_flags(tmp_path, capsys):
    raw = write_toy_2d_dataset(tmp_path / "raw", n=10, size=(24, 40), rgb=True)
    args = _parser().parse_args([
        "prepare", str(raw), "--out", str(tmp_path / "p"), "--shape", "16", "16", "--shape-mode", "pad_resize",
        "--channels", "1", "--folds", "0",
    ])
    assert args.func(args) == 0
    assert "Prepared 10 2D cases (images, 16x16 pad_resize)" in capsys.readouterr().out
    m = load_manifest(tmp_path / "p")
    assert (m.preprocessing["channels"], m.preprocessing["shape_mode"]) == (1, "pad_resize")
    assert m.case("toy2d_000")["original_shape"] == [24, 40] and m.case("toy2d_000")["spacing"] == [2.5, 2.5]
    ap = _parser()
    args = ap.parse_args(["prepare", "x", "--out", "o", "--mosaic", "4", "5", "--slices", "coronal"])
    assert args.mosaic == [4, 5] and args.slices == "coronal" and args.shape is None and args.window is None
    with pytest.raises(SystemExit):
        ap.parse_args(["prepare", "x", "--out", "o", "--slices", "diagonal"])
    assert "expected axial, coronal, sagittal" in capsys.readouterr().err
