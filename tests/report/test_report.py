"""`synthmed report`: every section from real stage outputs, inline images only, fields rendered when present."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from synthmed.cli import main
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.fileio import write_output_marker
from synthmed.report import write_report
from synthmed.report.render import fmt_number

from .conftest import SLICE, STUDY_VERDICT, parse_report, results_v2, rewrite_json

SECTIONS = ["verdicts", "data", "generators", "fidelity", "memorisation", "downstream"]
PNG = b"\x89PNG\r\n\x1a\n"
# tests marked slow read `report_study`, whose session fixture trains a generator and a benchmark (~30 s)
RUN, EVALUATION, DOWNSTREAM = f"generators/dcgan/{SLICE}", f"evaluation/dcgan/{SLICE}", f"downstream/{SLICE}"


def assert_self_contained(report) -> None:
    external = [link for link in report.links if re.match(r"^(https?:)?//", link)]
    assert not external, f"external resources: {external}"
    assert "script" not in report.tags and "link" not in report.tags and "iframe" not in report.tags
    for src in report.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)


@pytest.mark.slow
def test_study_report_has_every_section_from_the_real_outputs(report_study, tmp_path):
    out = write_report(report_study, tmp_path / "study.html")
    report = parse_report(out)
    assert list(report.sections) == SECTIONS
    assert_self_contained(report)
    # montage + curves, evaluate's figures, closest pairs and downstream plots: all inline
    assert len(report.images) >= 8
    assert report.text("verdicts").count("Dice [") == 1 and STUDY_VERDICT in report.text("verdicts")

    manifest = load_manifest(report_study / "prepared")
    splits = report.tables["splits"]
    assert splits[0] == ["manifest", "cases", "train", "val", "test", "folds"]
    assert splits[1] == ["prepared/manifest.json", "12"] + [str(len(manifest.split_ids(s))) for s in ("train", "val", "test")] + ["2"]
    sphere_train = next(r for r in report.tables["labels"] if r[:2] == ["1 sphere", "train"])
    volumes = sorted(manifest.case(i)["label_voxels"]["1"] * 1.5 ** 3 for i in manifest.split_ids("train"))
    assert sphere_train[3] == fmt_number(volumes[len(volumes) // 2])  # median of an odd count: the middle one

    assert RUN in report.text("generators") and "(dcgan3d)" in report.text("generators")
    assert "the first 6 pairs of the synthetic set" in report.text("generators")  # the study's own sample

    metrics = json.loads((report_study / EVALUATION / "metrics.json").read_text())
    block = metrics["images"]["radiomics/volume"]
    fd, ref = block["synthetic_vs_real"]["frechet_distance"]["value"], block["real_train_vs_real_test"]["frechet_distance"]["value"]
    row = next(r for r in report.tables["fidelity"] if r[:2] == ["images", "radiomics/volume"])
    assert row[2] == fmt_number(fd) and row[4] == fmt_number(ref) and row[5] == fmt_number(fd / ref)

    closest = report.tables["closest"][1:]
    assert [r[0] for r in closest] == [p["synthetic"] for p in metrics["memorisation"]["closest"]]

    assert report.tables["study-arms"] == [["arm", "cases", "Dice", "95% CI", "Dice sphere", "Dice core", "HD95 (mm)"],
                                           ["real real-noaug", "2", "0.219", "[0.200, 0.238]", "0.300", "0.138", "4.5"]]
    assert report.tables["study"][1] == ["real+synthetic-dcgan-n4-noaug", "real", "2", "0.250", "0.219",
                                         "+0.031", "[0.010, 0.052]", "+0.030", "0.5", "0.5", "no benefit"]
    results = json.loads((report_study / DOWNSTREAM / "results.json").read_text())
    arms = report.tables["arms"]
    assert "HD95 (mm)" in arms[0] and "Dice sphere" in arms[0] and "Dice core" in arms[0]
    assert [r[0] for r in arms[1:]] == [f"{a['label']} {a['name']} · {a['category']}" if a.get("label")
                                        else f"{a['name']} {a['category']}" for a in results["arms"]]
    assert arms[1][4].startswith(f"{results['arms'][0]['dice_mean']['mean']:.3f}")
    assert len(report.tables["comparisons"]) == 1 + len(results["comparisons"])


@pytest.mark.slow
def test_only_finished_study_units_are_reported(study_copy, tmp_path):
    (study_copy / "units" / f"evaluate-dcgan-{SLICE}.json").unlink()  # e.g. still running on another worker
    report = parse_report(write_report(study_copy, tmp_path / "r.html"))
    assert "No evaluation in this folder" in report.text("fidelity") and "fidelity" not in report.tables
    for record in (study_copy / "units").iterdir():
        record.unlink()
    (study_copy / "results.json").unlink()
    with pytest.raises(UserError, match="no finished train, evaluate or downstream output"):
        write_report(study_copy)


@pytest.mark.slow
def test_v2_results_show_budgets_signed_effects_and_verdicts(study_copy, tmp_path):
    downstream = study_copy / DOWNSTREAM
    rewrite_json(downstream / "results.json", results_v2)
    report = parse_report(write_report(downstream, tmp_path / "v2.html"))
    results = json.loads((downstream / "results.json").read_text())
    assert report.text("verdicts").startswith(f"Verdicts {results['verdicts'][0]}")
    comparison = report.tables["comparisons"][1]
    assert comparison[3:6] == ["+0.050", "[0.020, 0.080]", "+0.040"] and comparison[-1] == "benefit"
    assert all(row[-3] == "40" and row[-1] == "0.4321" for row in report.tables["arms"][1:])
    assert "Budget: equal_steps (steps from train.steps), batch size 4" in report.text("downstream")


@pytest.mark.slow
def test_text_from_the_outputs_is_escaped(study_copy, tmp_path):
    def inject(results):
        results["arms"][0]["name"] = '<script>alert(1)</script><img src="https://example.org/x.png">'
        return results

    rewrite_json(study_copy / DOWNSTREAM / "results.json", inject)
    out = write_report(study_copy, tmp_path / "escaped.html")
    report = parse_report(out)
    assert "script" not in report.tags and not [s for s in report.images if "example.org" in s]
    assert "&lt;script&gt;" in out.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("kind,present,absent", [
    (RUN, ["generators"], ["fidelity", "downstream", "verdicts"]),
    (EVALUATION, ["fidelity", "memorisation"], ["generators", "downstream"]),
    (DOWNSTREAM, ["downstream", "verdicts"], ["generators", "fidelity"]),
])
def test_a_single_output_folder_gets_its_own_report(report_study, kind, present, absent, tmp_path, capsys):
    folder = Path(report_study / kind)
    before = sorted(p.name for p in folder.iterdir())
    out = tmp_path / f"{folder.name}.html"
    assert main(["report", str(folder), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    report = parse_report(out)
    assert list(report.sections) == SECTIONS
    assert_self_contained(report)
    assert report.tables["splits"]  # every output names its manifest
    for section in present:
        assert "in this folder" not in report.text(section), section
    for section in absent:
        assert "in this folder" in report.text(section), section  # "No evaluation in this folder." etc.
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written into the output folder


@pytest.mark.slow
def test_a_demo_folder_is_searched_for_finished_outputs(report_study, tmp_path):
    demo = tmp_path / "demo"
    shutil.copytree(report_study / RUN, demo / "run")
    shutil.copytree(report_study / RUN, demo / ".run2.abcd.partial")  # unfinished: never read
    write_output_marker(demo, "demo", ["run"])
    report = parse_report(write_report(demo))
    assert (demo / "report.html").is_file()
    generators = report.text("generators")
    assert "run (dcgan3d)" in generators and "run2" not in generators
    assert "No downstream benchmark in this folder" in report.text("verdicts")


@pytest.mark.slow
def test_default_out_and_replacing_only_its_own_report(study_copy):
    downstream = study_copy / DOWNSTREAM
    assert write_report(downstream) == downstream.parent / f"{SLICE}_report.html"
    assert write_report(study_copy) == study_copy / "report.html"
    assert write_report(study_copy) == study_copy / "report.html"  # its own earlier report is replaced
    mine = study_copy / "notes.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(UserError, match="not a report written by synthmed"):
        write_report(study_copy, mine)
    assert mine.read_text() == "<p>my notes</p>"
    with pytest.raises(UserError, match="lies inside"):
        write_report(study_copy, downstream / "report.html")
    with pytest.raises(UserError, match="is a folder"):
        write_report(study_copy, downstream)


def test_label_volumes_of_a_2d_manifest_are_in_pixels(toy_prepared_2d):
    from synthmed.report.data_section import data_section

    section = data_section(toy_prepared_2d)
    manifest = load_manifest(toy_prepared_2d)
    assert section["volume_unit"] == "pixels" and [s["cases"] for s in section["splits"]] == [17, 2, 5]
    test_row = next(r for r in section["labels"] if r["split"] == "test")
    pixels = [manifest.case(i)["label_voxels"]["1"] for i in manifest.split_ids("test")]
    assert (test_row["low"], test_row["high"], test_row["with_label"]) == (min(pixels), max(pixels), 5)


@pytest.mark.slow
def test_damaged_parts_become_notes_in_the_report(study_copy, tmp_path):
    metrics = study_copy / EVALUATION / "metrics.json"
    metrics.write_text(metrics.read_text()[:100])  # e.g. copied while being written
    (study_copy / "prepared" / "manifest.json").rename(study_copy / "prepared" / "moved.json")
    report = parse_report(write_report(study_copy, tmp_path / "r.html"))
    assert f"{metrics}: cannot read" in report.text("fidelity")
    assert "manifest not found" in report.text("data")
    assert report.tables["arms"]  # the rest is still there


def test_number_formats():
    from synthmed.report.render import fmt_ci, fmt_dice, fmt_signed

    assert fmt_number(None) == "–" and fmt_number(float("nan")) == "–" and fmt_number(12) == "12"
    assert fmt_number(1137570.27) == "1.138e+06" and fmt_dice(0.81234) == "0.812"
    assert fmt_signed(-0.0081) == "−0.008" and fmt_signed(0.05) == "+0.050"
    assert fmt_ci({"ci_low": -0.02, "ci_high": 0.004}, ".3f") == "[−0.020, 0.004]"
    assert fmt_ci([1.5e-05, 2e-05], ".2g") == "[1.5e-05, 2e-05]" and fmt_ci({"ci_low": None, "ci_high": 1}) == ""
