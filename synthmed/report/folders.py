"""Which synthmed outputs a folder holds: a single train / evaluate / downstream folder, or a study (or
demo) folder whose sub-folders hold several of them.

A study folder (``synthmed study``: study.yaml + plan.json, see synthmed/study/__init__.py) lists its work
units in plan.json; only the outputs of finished units (``units/<unit id>.json`` present) are reported.
Other collections (a demo folder, a folder marked "study") are searched for finished output folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from synthmed.errors import UserError
from synthmed.fileio import read_output_marker

REPORTED_KINDS = ("train", "evaluate", "downstream")  # the folders a report renders a section for
COLLECTION_KINDS = ("study", "demo")  # folders whose sub-folders are reported together
MAX_DEPTH = 5  # how deep a study's sub-folders are searched
STUDY_FILES = ("study.yaml", "plan.json")  # what `synthmed study` writes first
STUDY_RESULTS_FORMAT = "synthmed-study-results"


@dataclass
class Outputs:
    """The folders found under one report folder, by kind (sorted by path)."""

    folder: Path
    kind: str  # "study", "demo", "train", "evaluate" or "downstream"
    train: list[Path] = field(default_factory=list)
    evaluate: list[Path] = field(default_factory=list)
    downstream: list[Path] = field(default_factory=list)
    sample: list[Path] = field(default_factory=list)  # synthetic sets (their montage rows)
    prepare: list[Path] = field(default_factory=list)  # prepared folders (the data section)
    study_results: Path | None = None  # a study's aggregate results.json, once its aggregate unit finished


def _json_format(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("format") if isinstance(doc, dict) else None


def folder_kind(folder: Path) -> str | None:
    """The synthmed command that wrote `folder` (its marker, else its files), or None."""
    marker = read_output_marker(folder)
    if marker and isinstance(marker.get("kind"), str):
        return marker["kind"]
    if all((folder / name).is_file() for name in STUDY_FILES):
        return "study"
    if (folder / "metrics.jsonl").is_file() and (folder / "config.yaml").is_file():
        return "train"  # a training run folder (written in place, resumable)
    formats = {"results.json": "downstream", "metrics.json": "evaluate", "card.json": "sample",
               "manifest.json": "prepare"}
    expected = {"results.json": "synthmed-downstream-results", "metrics.json": "synthmed-evaluation",
                "card.json": "synthmed-card", "manifest.json": "synthmed-manifest"}
    for name, kind in formats.items():
        if (folder / name).is_file() and _json_format(folder / name) == expected[name]:
            return kind
    return None


def _sub_outputs(folder: Path, outputs: Outputs, depth: int) -> None:
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if child.name.endswith(".partial"):
            continue  # an unfinished output: the report reads only finished work
        kind = folder_kind(child)
        if kind in (*REPORTED_KINDS, "sample", "prepare"):
            getattr(outputs, kind).append(child)
        elif depth < MAX_DEPTH:
            _sub_outputs(child, outputs, depth + 1)


def _plan_outputs(folder: Path, outputs: Outputs) -> None:
    """The outputs of a study's finished units, in plan order."""
    try:
        units = json.loads((folder / "plan.json").read_text())["units"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{folder / 'plan.json'}: unreadable study plan (expected the units `synthmed study` writes)") from None
    for unit in units:
        kind, output = unit.get("kind"), unit.get("output")
        finished = (folder / "units" / f"{unit.get('id')}.json").is_file()
        if finished and output and kind in (*REPORTED_KINDS, "sample", "prepare") and (folder / output).is_dir():
            getattr(outputs, kind).append(folder / output)
    if (folder / "results.json").is_file() and _json_format(folder / "results.json") == STUDY_RESULTS_FORMAT:
        outputs.study_results = folder / "results.json"


def find_outputs(folder: Path) -> Outputs:
    """Classify `folder` and gather what the report renders.

    Raises:
        UserError: the folder is missing, empty, or not a train / evaluate / downstream / study / demo
            folder written by synthmed (a study or demo folder must hold at least one of the former).
    """
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found (pass a study, train, evaluate or downstream folder)")
    if not any(folder.iterdir()):
        raise UserError(f"{folder}: empty folder, nothing to report")
    kind = folder_kind(folder)
    if kind in REPORTED_KINDS:
        outputs = Outputs(folder, kind)
        getattr(outputs, kind).append(folder)
        return outputs
    if kind not in COLLECTION_KINDS:
        what = f"written by `synthmed {kind}`" if kind else "not a synthmed output folder"
        raise UserError(f"{folder}: {what}; `synthmed report` renders a study, train, evaluate or downstream folder")
    outputs = Outputs(folder, kind)
    if all((folder / name).is_file() for name in STUDY_FILES):
        _plan_outputs(folder, outputs)
    else:
        _sub_outputs(folder, outputs, 1)
    if not (outputs.train or outputs.evaluate or outputs.downstream or outputs.study_results):
        raise UserError(f"{folder}: this {kind} folder holds no finished train, evaluate or downstream output yet")
    return outputs
