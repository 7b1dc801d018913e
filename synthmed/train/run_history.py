"""What a run has trained on and with which settings, from its first step on: the run history.

Every checkpoint holds ``history``, a list of entries, and the run folder mirrors it as
``history.jsonl`` (one JSON object per line). The first entry (``event: "start"``, ``step: 0``) holds the
full configuration; each ``--resume`` adds one (``event: "resume"``, the step it continued from) with the
settings it changed (``changes``: dotted key -> ``[old, new]``). Every entry names the manifest (path
and sha256) and the case ids trained on from that step, so the union over the history is every case the
generator has seen, even if a run ever trained on several manifests.

A resume may change only budgets and logging (`RESUMABLE_KEYS`); anything that changes what the run
means (data, model, optimisers, batch size, seed, EMA) is refused by `check_resume`.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from synthmed import __version__
from synthmed.errors import UserError
from synthmed.fileio import atomic_write_text

HISTORY_FILE = "history.jsonl"

# settings a resume may change: how long to train and how to log, never what is trained
RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.progress", "train.device", "train.amp", "train.compile",
                  "train.sample_every", "train.sample_count", "train.fidelity_every")  # watching; not train.fidelity.*
_IGNORED_KEYS = ("out", "data.manifest")  # the run folder is where it is; the manifest is compared by sha256
_ABSENT = "(absent)"


def history_entry(event: str, step: int, manifest: dict[str, str], trained_on: list[str], **fields: Any) -> dict:
    """One history entry: ``event`` ("start" or "resume") taking effect at ``step``.

    Args:
        manifest: ``{"path", "sha256"}`` of the manifest trained on from ``step``.
        trained_on: the ids of the cases trained on from ``step``.
        fields: ``config`` (start) or ``changes`` (resume).
    """
    return {"event": event, "step": step, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "synthmed_version": __version__, "manifest": dict(manifest), "trained_on": sorted(trained_on), **fields}


def checkpoint_history(state: dict[str, Any]) -> list[dict]:
    """A checkpoint's history; for a checkpoint written before histories, one entry rebuilt from it."""
    if state.get("history"):
        return list(state["history"])
    data = state["data"]
    manifest = {"path": data["manifest_path"], "sha256": data["manifest_sha256"]}
    return [history_entry("start", 0, manifest, data["trained_on"], config=state["config"],
                          note="rebuilt from a checkpoint written without a history")]


def trained_case_ids(state: dict[str, Any]) -> list[str]:
    """Every case id the checkpoint's generator has trained on: the union over its run's history."""
    ids = set(state["data"]["trained_on"])
    for entry in checkpoint_history(state):
        ids.update(entry["trained_on"])
    return sorted(ids)


def trained_manifests(state: dict[str, Any]) -> list[dict[str, str]]:
    """The distinct manifests (``{"path", "sha256"}``) of the run's history, in the order first used."""
    seen: dict[str, dict[str, str]] = {}
    for entry in checkpoint_history(state):
        seen.setdefault(entry["manifest"]["sha256"], entry["manifest"])
    return list(seen.values())


def write_history(run_dir: Path, history: list[dict]) -> None:
    """Mirror the history into ``RUN/history.jsonl`` (rewritten whole, atomically)."""
    atomic_write_text(Path(run_dir) / HISTORY_FILE, "".join(json.dumps(e) + "\n" for e in history))


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and tuples stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list]:
    """Dotted keys whose value differs between two configurations, as ``[old, new]`` (``"(absent)"`` for none)."""
    a, b = flatten(old), flatten(new)
    return {k: [a.get(k, _ABSENT), b.get(k, _ABSENT)] for k in sorted(a.keys() | b.keys())
            if k not in _IGNORED_KEYS and a.get(k, _ABSENT) != b.get(k, _ABSENT)}


def check_resume(run_dir: Path, state: dict[str, Any], new_config: dict[str, Any], new_manifest: dict[str, str]) -> dict:
    """The changes of a resume, after refusing any that would change what the run means.

    Args:
        state: the checkpoint resumed from (its ``config`` is the run's configuration so far).
        new_config: the resolved configuration of the resume (JSON form).
        new_manifest: ``{"path", "sha256"}`` of the manifest the resume names.

    Returns:
        dotted key -> ``[old, new]`` for every allowed change (budgets, logging, a moved manifest).

    Raises:
        UserError: naming every refused key (old -> new) and how to start a new run with them instead.
    """
    old_manifest = {"path": state["data"]["manifest_path"], "sha256": state["data"]["manifest_sha256"]}
    changes = config_changes(_with_defaults(state["config"]), new_config)
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE_KEYS}
    if new_manifest["sha256"] != old_manifest["sha256"]:
        refused["data.manifest"] = [f"{old_manifest['path']} (sha256 {old_manifest['sha256'][:12]})",
                                    f"{new_manifest['path']} (sha256 {new_manifest['sha256'][:12]})"]
    elif new_manifest["path"] != old_manifest["path"]:  # the same manifest, moved: the run means the same
        changes["data.manifest"] = [old_manifest["path"], new_manifest["path"]]
    if refused:
        listed = "; ".join(f"{k}: {_show(old)} -> {_show(new)}" for k, (old, new) in refused.items())
        sets = [f"--set {k}={_show(new, for_set=True)}" for k, (old, new) in refused.items()
                if k != "data.manifest" and old != _ABSENT]  # a setting new to the run takes its default
        if "data.manifest" in refused:
            sets.append(f"--set data.manifest={new_manifest['path']}")
        raise UserError(
            f"{run_dir}: --resume continues a run exactly and cannot change what it trains on or how ({listed}); "
            f"only {', '.join(RESUMABLE_KEYS)} may change. To train with the new settings, start a new run: "
            f"synthmed train --config {Path(run_dir) / 'config.yaml'} {' '.join(sets)} --out NEW_RUN_DIR")
    return changes


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration with the defaults of today's settings filled in, so that a setting added
    since the checkpoint was written does not count as a change when left at its default."""
    from synthmed.train.config import resolve_config

    try:
        return resolve_config(config).model_dump(mode="json")
    except UserError:  # a setting since removed or renamed: compare as stored
        return config


def _show(value: Any, for_set: bool = False) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value).replace(" ", "") if for_set else json.dumps(value)
