"""A model that cannot take the data or its parameters ends ``synthmed train`` with one clean line (exit 2)."""

from pathlib import Path

import pytest
import yaml

from synthmed.cli import main

HAGAN = {"latent_dim": 8, "feature_channels": 8, "g_max_channels": 8, "d_channels": 4, "d_max_channels": 8}


def write_config(tmp_path: Path, manifest: Path, model: str, params: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name": model, "params": params},
        "data": {"manifest": str(manifest)},
        "optim": {name: {} for name in (["G", "D", "E"] if model == "hagan" else ["G", "D"])},
        "train": {"steps": 1, "batch_size": 4, "progress": False},
        "out": str(tmp_path / "run"),
    }))
    return path


def train_error(argv: list[str], capsys) -> str:
    """The message of a ``synthmed train`` that must fail cleanly."""
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("slab_depth,expected", [
    (6, "model.params.slab_depth: 6 must be a multiple of 4 and at most the volume's depth 16"),
    (32, "model.params.slab_depth: 32 must be a multiple of 4 and at most the volume's depth 16"),
])
def test_bad_hagan_slab_depth(toy_prepared, tmp_path, capsys, slab_depth, expected):
    config = write_config(tmp_path, toy_prepared, "hagan", HAGAN)
    err = train_error(["--config", str(config), "--set", f"model.params.slab_depth={slab_depth}"], capsys)
    assert err == f"synthmed train: error: {expected}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model,params", [("hagan", HAGAN), ("dcgan3d", {"latent_dim": 8, "base_channels": 4})])
def test_a_3d_model_on_2d_data(toy_prepared_2d, tmp_path, capsys, model, params):
    err = train_error(["--config", str(write_config(tmp_path, toy_prepared_2d, model, params))], capsys)
    assert err.startswith(f"synthmed train: error: model.name: {model!r} generates 3D volumes (D, H, W) "
                          "but the data have shape [32, 32] (2 spatial axes)")
