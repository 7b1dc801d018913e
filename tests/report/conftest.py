"""A small folder in the layout `synthmed study` writes (synthmed/study/__init__.py: study.yaml, plan.json,
units/<id>.json per finished unit, results.json) holding every output a report renders, made once per
session with the real stages on 16³ toy data: prepared set (2 folds), a 4-step DCGAN run, 6 sampled pairs,
an evaluation (radiomics only) and a downstream benchmark (real vs real + synthetic, 1 epoch). Only the
study's aggregate results.json is written here by hand (the study stage is above the report's rank)."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.downstream.benchmark import run_downstream
from synthmed.downstream.config import resolve_downstream_config
from synthmed.metrics.evaluate import EvaluateOptions, evaluate_synthetic_set
from synthmed.sample.sampler import sample_to_folder
from synthmed.train.config import resolve_config
from synthmed.train.loop import train
from tests.train.test_training import tiny_config

SLICE = "r9-s0"
UNITS = [("prepare", "prepare", "prepared"), (f"train-dcgan-{SLICE}", "train", f"generators/dcgan/{SLICE}"),
         (f"sample-dcgan-{SLICE}", "sample", f"synthetic/dcgan/{SLICE}"),
         (f"evaluate-dcgan-{SLICE}", "evaluate", f"evaluation/dcgan/{SLICE}"),
         (f"downstream-{SLICE}", "downstream", f"downstream/{SLICE}"), ("aggregate", "aggregate", "results.json")]
STUDY_VERDICT = "real + dcgan x 4: +0.031 Dice [+0.010, +0.052] against real: no benefit (Holm p = 0.5)"


def write_study_files(root: Path) -> None:
    """study.yaml, plan.json, a finished-unit record per unit and the aggregate results.json."""
    (root / "study.yaml").write_text("name: toy\nprotocol: fixed_validation\n")
    plan = {"name": "toy", "protocol": "fixed_validation", "prepared": None,
            "units": [{"id": i, "kind": k, "needs": [], "output": o, "slice": SLICE, "generator": None} for i, k, o in UNITS]}
    (root / "plan.json").write_text(json.dumps(plan))
    (root / "units").mkdir()
    for unit_id, kind, _ in UNITS:
        (root / "units" / f"{unit_id}.json").write_text(json.dumps({"id": unit_id, "kind": kind, "wall_s": 1.0}))
    comparison = {"arm": "real+synthetic-dcgan-n4-noaug", "baseline": "real-noaug", "mean_dice": 0.25,
                  "baseline_dice": 0.219, "mean_difference": 0.031, "ci_low": 0.010, "ci_high": 0.052, "n_cases": 2,
                  "statistic": 0.0, "p": 0.5, "median_difference": 0.03, "p_holm": 0.5, "verdict": "no benefit",
                  "baseline_role": "real_only", "sentence": STUDY_VERDICT}
    (root / "results.json").write_text(json.dumps({
        "format": "synthmed-study-results", "format_version": 2, "name": "toy", "protocol": "fixed_validation",
        "real_sizes": [9], "seeds": [0], "finished_units": [u[0] for u in UNITS[:-1]], "units": len(UNITS) + 1,
        "comparisons": {"9": [comparison]},
        "arms": {"9": [{"arm": "real-noaug", "label": "real", "n_cases": 2, "dice": 0.219, "ci_low": 0.2, "ci_high": 0.238,
                        "dice_per_label": {"sphere": 0.3, "core": 0.138}, "hd95": 4.5, "hd95_unit": "mm"}]}, "verdicts": [STUDY_VERDICT], "fidelity": [],
        "wall_s_per_stage": {"prepare": 1.0, "train": 1.0, "downstream": 1.0}, "method": "paired by case"}))


@pytest.fixture(scope="session")
def report_study(tmp_path_factory) -> Path:
    """Read-only: copy it before damaging it."""
    root = tmp_path_factory.mktemp("report") / "study"
    raw = write_toy_dataset(root.parent / "raw", layout="msd")
    options = PrepareOptions(shape=(16, 16, 16), spacing=None, test_fraction=0.2, val_fraction=0.1, folds=2)
    manifest = prepare_dataset([raw], root / "prepared", options, progress=False)
    run = train(resolve_config(tiny_config(manifest, root / "generators" / "dcgan" / SLICE, steps=4)))
    synthetic = sample_to_folder(run, 6, root / "synthetic" / "dcgan" / SLICE)
    evaluate_synthetic_set(str(manifest), synthetic, root / "evaluation" / "dcgan" / SLICE, EvaluateOptions(
        features=("radiomics",), n_bootstrap=10, kid_subsets=10, download_weights=False, update_card=False))
    run_downstream(resolve_downstream_config({
        "manifest": str(manifest), "synthetic": {"dcgan": str(synthetic)}, "arms": ["real", "real+synthetic"],
        "n_synthetic": [4], "folds": 2, "seeds": [0], "stats": {"bootstrap": 100}, "out": str(root / "downstream" / SLICE),
        "train": {"epochs": 1, "batch_size": 4, "model_size": "tiny", "progress": False}}))
    write_study_files(root)
    return root


@pytest.fixture
def study_copy(report_study, tmp_path) -> Path:
    return Path(shutil.copytree(report_study, tmp_path / "study"))


def results_v2(results: dict) -> dict:
    """A format-2 results.json (the fields i17's downstream adds: budgets, comparisons, verdicts) made
    from a format-1 one, with numbers chosen so that one arm helps and the verdict is known."""
    arms = results["arms"]
    baseline, other = arms[0]["name"], arms[1]["name"]
    for arm in arms:
        arm.update(label=arm["name"].replace("-", " "), is_baseline=arm["name"] == baseline,
                   steps={"train": 40, "pretrain": 0}, final_train_loss=0.4321, extra_labels=None)
    sentence = f"{other}: +0.050 Dice [0.020, 0.080] against {baseline}: benefit (Holm p = 0.012)"
    results.update(format_version=2, verdicts=[sentence],
                   budget={"mode": "equal_steps", "steps_from": "train.steps", "batch_size": 4, "lr": 0.0002,
                           "schedule": "constant", "selection": "best real validation Dice", "note": ""},
                   comparisons=[{"arm": other, "baseline": baseline, "baseline_role": "real_only", "n_cases": 2,
                                 "mean_difference": 0.05, "median_difference": 0.04, "ci_low": 0.02, "ci_high": 0.08,
                                 "statistic": 0.0, "p": 0.006, "p_holm": 0.012, "verdict": "benefit",
                                 "sentence": sentence, "extra_labels": False}])
    results["tests"].pop("wilcoxon_vs_real_only", None)
    return results


def rewrite_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


class ReportParser(HTMLParser):
    """Sections (by id), every src/href, the text of each section, tables by class, and elements seen."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.links: list[str] = []
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.tables: dict[str, list[list[str]]] = {}
        self._section: str | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.links += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "section":
            self._section = attrs.get("id")
            self.sections[self._section] = []
        if tag == "table":
            self._table = attrs.get("class", "")
            self.tables.setdefault(self._table, [])
        if tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        if tag in ("td", "th"):
            self._cell = []
        if tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "table":
            self._table = None
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.sections[self._section].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]).split())


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text())
    return parser
