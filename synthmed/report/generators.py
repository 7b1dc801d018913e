"""Generators: each training run's loss curves and a montage of its samples beside real training cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.report.data_section import run_config, train_manifest
from synthmed.report.figures import loss_curves_uri, montage_uri
from synthmed.sample.card import load_card
from synthmed.sample.sampler import sample_arrays
from synthmed.sample.synthetic_set import load_synthetic_set

MONTAGE_CASES = 6  # cases per montage row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file; a torn last line (a run killed mid-write) is skipped."""
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _trained_on(run: Path) -> int | None:
    """How many real cases the run saw, over its whole history (resumes included)."""
    ids: set[str] = set()
    for event in read_jsonl(run / "history.jsonl"):
        ids.update(event.get("trained_on") or [])
    return len(ids) or None


def _set_of_run(run: Path, sets: list[Path]) -> Path | None:
    """A synthetic set sampled from `run` (its card's checkpoint lies in the run folder), if any."""
    for folder in sets:
        try:
            checkpoint = Path(load_card(folder)["checkpoint"]["path"]).resolve()
        except (UserError, KeyError, TypeError):
            continue
        if run.resolve() in checkpoint.parents:
            return folder
    return None


def _montage(run: Path, sets: list[Path]) -> tuple[str | None, str]:
    """(montage URI or None, where the synthetic row comes from or why there is no montage)."""
    manifest_path = train_manifest(run)
    if manifest_path is None:
        return None, f"no montage: {run / 'config.yaml'} names no data.manifest"
    try:
        manifest = load_manifest(manifest_path)
        real_images, real_masks = load_arrays(manifest, manifest.split_ids("train")[:MONTAGE_CASES])
        synthetic_set = _set_of_run(run, sets)
        if synthetic_set is not None:
            n = min(MONTAGE_CASES, len(list((synthetic_set / "labelsTr").iterdir())))
            images, masks, _ = load_synthetic_set(synthetic_set, tuple(manifest.preprocessing["shape"]), list(range(n)))
            source = f"the first {n} pairs of the synthetic set {synthetic_set.name}"
        else:
            images, masks = sample_arrays(run, MONTAGE_CASES, seed=0)
            source = f"{MONTAGE_CASES} pairs sampled now from the run's newest checkpoint (seed 0)"
    except UserError as err:
        return None, f"no montage: {err}"
    labels = {str(k): v for k, v in manifest.labels.items()}
    if int(manifest.preprocessing.get("dims", 3)) == 3:
        source += "; the axial slice through each mask's centroid"
    rows = [("real (train)", real_images, real_masks), ("synthetic", np.asarray(images), np.asarray(masks))]
    return montage_uri(rows, labels), source


def generator_section(run: Path, root: Path, sets: list[Path]) -> dict[str, Any]:
    """Name, model, budget, loss curves and montage of one training run."""
    config = run_config(run)
    records = read_jsonl(run / "metrics.jsonl")
    name = str(run.relative_to(root)) if run != root else run.name
    montage, montage_source = _montage(run, sets)
    return {
        "name": name, "path": str(run),
        "model": (config.get("model") or {}).get("name", "?"),
        "steps_planned": (config.get("train") or {}).get("steps"),
        "steps_logged": max((r.get("step", 0) for r in records), default=0),
        "trained_on": _trained_on(run),
        "curves": loss_curves_uri(records, name),
        "montage": montage, "montage_source": montage_source,
    }
