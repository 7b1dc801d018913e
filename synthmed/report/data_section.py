"""The data section: split sizes and label volumes of each manifest the reported outputs used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.report.folders import Outputs

SPLITS = ("train", "val", "test")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def run_config(run: Path) -> dict[str, Any]:
    """A training run's config.yaml; empty when it cannot be read."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def train_manifest(run: Path) -> str | None:
    """The manifest a training run read (its config.yaml's data.manifest)."""
    manifest = (run_config(run).get("data") or {}).get("manifest")
    return manifest if isinstance(manifest, str) else None


def manifest_paths(outputs: Outputs) -> list[Path]:
    """Every manifest the outputs name (prepared folders first), resolved, without repeats."""
    found = [p / "manifest.json" for p in outputs.prepare]
    found += [train_manifest(run) for run in outputs.train]
    found += [_read_json(e / "metrics.json").get("real", {}).get("manifest") for e in outputs.evaluate]
    found += [_read_json(d / "results.json").get("manifest", {}).get("path") for d in outputs.downstream]
    unique: list[Path] = []
    for path in found:
        if path:
            path = Path(path).expanduser().resolve()
            path = path / "manifest.json" if path.is_dir() else path
            if path not in unique:
                unique.append(path)
    return unique


def _volume_unit(manifest) -> tuple[str, bool]:
    """(unit, whether case spacing converts voxels to it): mm³ for 3D with spacing, else voxels/pixels."""
    dims = int(manifest.preprocessing.get("dims", 3))
    if dims == 3 and all(c.get("spacing") for c in manifest.cases):
        return "mm³", True
    return ("voxels", False) if dims == 3 else ("pixels", False)


def label_volume_rows(manifest) -> tuple[list[dict[str, Any]], str]:
    """Per foreground label and split: cases holding it, median and range of its volume."""
    unit, scaled = _volume_unit(manifest)
    rows = []
    for label, name in sorted(manifest.labels.items()):
        if label == 0:
            continue
        for split in SPLITS:
            volumes = []
            for case_id in manifest.split_ids(split):
                case = manifest.case(case_id)
                voxels = float(case.get("label_voxels", {}).get(str(label), 0))
                volumes.append(voxels * float(np.prod(case["spacing"])) if scaled else voxels)
            present = [v for v in volumes if v > 0]
            rows.append({"label": f"{label} {name}", "split": split, "cases": len(volumes), "with_label": len(present),
                         "median": float(np.median(present)) if present else None,
                         "low": min(present) if present else None, "high": max(present) if present else None})
    return rows, unit


def data_section(path: Path) -> dict[str, Any]:
    """What the report shows of one manifest; a manifest that cannot be read gives a note instead."""
    try:
        manifest = load_manifest(path)
    except UserError as err:
        return {"path": str(path), "problem": str(err)}
    splits = [{"split": s, "cases": len(manifest.split_ids(s))} for s in SPLITS]
    rows, unit = label_volume_rows(manifest)
    pre = manifest.preprocessing
    return {
        "path": str(path), "problem": None, "sha256": manifest.sha256, "n_cases": len(manifest.cases), "splits": splits,
        "folds": len(manifest.splits.get("folds") or []),
        "sources": ", ".join(s.get("name", "?") for s in manifest.data.get("sources", [])),
        "preprocessing": {"dims": pre.get("dims"), "shape": pre.get("shape"), "spacing": pre.get("spacing"),
                          "modality": pre.get("modality"), "intensity": (pre.get("intensity") or {}).get("mode")},
        "labels": rows, "volume_unit": unit,
    }
