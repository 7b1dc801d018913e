"""Grid search: train every combination of a few config values and tabulate the runs' final metrics.

The thesis tuned HA-GAN with a 27-run grid over learning rates and latent size. A grid file maps dotted
config keys to lists of values::

    optim.G.lr: [5.0e-5, 1.0e-4, 2.0e-4]
    optim.D.lr: [2.0e-4, 4.0e-4, 8.0e-4]
    model.params.latent_dim: [256, 512, 1024]

Output folder::

    OUT/runs/run_000/ ...     one ordinary run folder per combination (config.yaml, checkpoints, ...)
    OUT/grid.csv, grid.json   one row per run: the values, final losses, speed, validation recon L1

Finished runs are skipped when the command is repeated, so an interrupted grid continues where it stopped.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
from pathlib import Path
from typing import Any

import torch

from synthmed.config import read_yaml
from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.fileio import atomic_write_json, atomic_write_text
from synthmed.train.checkpoint import list_checkpoints, load_generator
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

RECON_KEY = "val_recon_l1"  # mean absolute error of encode -> decode on the validation cases


def grid_combinations(grid_spec: dict[str, list[Any]], source: str = "grid") -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order the keys were given.

    Raises:
        UserError: the grid is empty or a key's value is not a non-empty list.
    """
    if not isinstance(grid_spec, dict) or not grid_spec:
        raise UserError(f"{source}: expected a mapping of dotted config keys to lists of values")
    for key, values in grid_spec.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: {key}: expected a non-empty list of values, got {values!r}")
    keys = list(grid_spec)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid_spec[k] for k in keys))]


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def _final_record(run_dir: Path) -> dict[str, Any]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


@torch.no_grad()
def validation_recon_l1(run_dir: Path, batch_size: int = 4) -> float | None:
    """Encode -> decode L1 on the manifest's validation cases; None for models without encoders or val cases."""
    model, state = load_generator(run_dir)
    if not model.capabilities.encoder:
        return None
    manifest = load_manifest(state["data"]["manifest_path"])
    ids = manifest.split_ids("val")
    if not ids:
        return None
    images, masks = (torch.from_numpy(a) for a in load_arrays(manifest, ids))
    errors = []
    for i in range(0, len(ids), batch_size):
        real = model.codec.encode(images[i : i + batch_size], masks[i : i + batch_size])
        _, recon = model.reconstruct(real)
        errors.append((recon - real).abs().flatten(1).mean(1))
    return float(torch.cat(errors).mean())


def _run_one(base: dict, values: dict[str, Any], run_dir: Path, overrides: list[str], source: str) -> dict[str, Any]:
    config = resolve_config(copy.deepcopy(base), [*overrides, *(_override(k, v) for k, v in values.items()), f"out={run_dir}"], source)
    done = list_checkpoints(run_dir)
    finished = bool(done) and int(done[-1].stem.split("_")[1]) >= config.train.steps
    if not finished:
        train(config, resume=bool(done))
    record = _final_record(run_dir)
    row = {"run": run_dir.name, **values, "step": record.get("step")}
    row.update({k: v for k, v in record.items() if k.startswith("loss/")})
    row["sec_per_step"] = record.get("sec_per_step")
    row[RECON_KEY] = validation_recon_l1(run_dir)
    return row


def _write_table(rows: list[dict[str, Any]], out: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "grid.csv", buffer.getvalue())
    atomic_write_json(out / "grid.json", {"runs": rows})


def run_grid(
    base_config: str | Path | dict,  # YAML file or raw config dict
    grid_spec: str | Path | dict,  # YAML file or dict: dotted key -> list of values
    out: str | Path,  # grid folder (runs/ and the tables go here)
    overrides: list[str] = (),  # --set KEY=VALUE applied to every run, before the grid's values
) -> Path:
    """Train every combination of ``grid_spec`` on top of ``base_config``; write ``grid.csv`` / ``grid.json``.

    Every combination's configuration is validated before the first run starts, so a bad key fails
    early. The table is rewritten after each run, ordered by validation reconstruction L1 where known.

    Returns:
        The path of ``grid.csv``.

    Raises:
        UserError: unreadable files, a bad grid, or a combination that is not a valid configuration.
    """
    source = str(base_config) if not isinstance(base_config, dict) else "config"
    base = read_yaml(base_config) if not isinstance(base_config, dict) else base_config
    spec = read_yaml(grid_spec) if not isinstance(grid_spec, dict) else grid_spec
    combos = grid_combinations(spec, str(grid_spec) if not isinstance(grid_spec, dict) else "grid")
    out = Path(out)
    for values in combos:  # validate everything up front
        resolve_config(copy.deepcopy(base), [*overrides, *(_override(k, v) for k, v in values.items())], source)
    rows = []
    for i, values in enumerate(combos):
        rows.append(_run_one(base, values, out / "runs" / f"run_{i:03d}", list(overrides), source))
        _write_table(sorted(rows, key=_rank), out)
    return out / "grid.csv"


def _rank(row: dict[str, Any]) -> tuple[float, str]:
    recon = row.get(RECON_KEY)
    return (recon if isinstance(recon, float) and math.isfinite(recon) else math.inf, row["run"])
