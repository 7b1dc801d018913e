"""The smallest downstream run through the CLI, for end-to-end tests that end with it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from synthmed.cli import main


def run_tiny_downstream(manifest: Path, synthetic: Path, n: int, work: Path) -> set[str]:
    """Real-only and synthetic-only arms, 2 folds, one epoch of a tiny U-Net; returns the arm names run."""
    config = {"manifest": str(manifest), "synthetic": {"toy": str(synthetic)}, "arms": ["real", "synthetic"],
              "n_synthetic": [n], "folds": 2,
              "train": {"epochs": 1, "batch_size": 4, "model_size": "tiny", "progress": False},
              "out": str(work / "ds")}
    (work / "ds.yaml").write_text(yaml.safe_dump(config))
    assert main(["downstream", "--config", str(work / "ds.yaml")]) == 0
    return {a["name"] for a in json.loads((work / "ds" / "results.json").read_text())["arms"]}
