"""Grid search: every combination trained, tabulated, resumable, refused early when bad."""

import argparse
import csv
import json
import math

import pytest

from synthmed.errors import UserError
from synthmed.train.cli import add_grid_parser
from synthmed.train.grid import grid_combinations, run_grid
from tests.models.test_hagan import tiny_config


@pytest.mark.slow
def test_grid_trains_every_combination_and_writes_a_table(toy_prepared, tmp_path):
    base = tiny_config(toy_prepared, tmp_path / "unused", steps=1)
    grid = {"optim.G.lr": [1e-4, 2e-4], "model.params.latent_dim": [8]}
    table = run_grid(base, grid, tmp_path / "grid")
    rows = list(csv.DictReader(table.open()))
    assert sorted((float(r["optim.G.lr"]), int(r["model.params.latent_dim"])) for r in rows) == [(1e-4, 8), (2e-4, 8)]
    for row in rows:
        assert int(row["step"]) == 1 and math.isfinite(float(row["loss/G"]))
        assert 0 < float(row["val_recon_l1"]) < 2  # one validation case, encoded and decoded
        saved = (tmp_path / "grid" / "runs" / row["run"] / "config.yaml").read_text()
        assert f"lr: {float(row['optim.G.lr'])}" in saved
    assert len(json.loads((tmp_path / "grid" / "grid.json").read_text())["runs"]) == 2
    mtime = (tmp_path / "grid" / "runs" / "run_000" / "metrics.jsonl").stat().st_mtime
    run_grid(base, grid, tmp_path / "grid")  # finished runs are not trained again
    assert (tmp_path / "grid" / "runs" / "run_000" / "metrics.jsonl").stat().st_mtime == mtime


def test_bad_grids_are_refused_before_any_training(toy_prepared, tmp_path):
    base = tiny_config(toy_prepared, tmp_path / "unused", steps=2)
    assert len(grid_combinations({"a": [1, 2, 3], "b": [1, 2, 3], "c": [1, 2, 3]})) == 27
    with pytest.raises(UserError, match="b: expected a non-empty list"):
        grid_combinations({"a": [1], "b": 3})
    with pytest.raises(UserError, match="optim.G.lrr: unknown key"):
        run_grid(base, {"optim.G.lrr": [1e-4]}, tmp_path / "grid")
    assert not (tmp_path / "grid").exists()


def test_grid_parser_sets_its_function():
    parser = argparse.ArgumentParser()
    add_grid_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["grid", "--config", "a.yaml", "--grid", "g.yaml", "--out", "o", "--set", "train.steps=3"])
    assert args.func.__name__ == "_run_grid" and args.overrides == ["train.steps=3"]
