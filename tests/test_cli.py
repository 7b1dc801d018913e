"""Smoke tests of the command line: every verb, and clean errors for bad input."""

import json
from pathlib import Path

import pytest
import yaml

from synthmed.cli import main


def test_prepare_train_sample_through_the_cli(toy_msd, tmp_path, capsys):
    prepared, run, syn = tmp_path / "prep", tmp_path / "run", tmp_path / "syn"
    assert main(["prepare", str(toy_msd), "--out", str(prepared), "--shape", "16", "16", "16", "--folds", "2"]) == 0
    config = {
        "model": {"name": "dcgan3d", "params": {"latent_dim": 8, "base_channels": 4}},
        "data": {"manifest": str(prepared)},
        "optim": {"G": {}, "D": {}},
        "train": {"steps": 2, "batch_size": 2, "progress": False},
    }
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(config_path), "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--set", "train.steps=4"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4
    assert main(["sample", "--checkpoint", str(run), "-n", "2", "--out", str(syn), "--keep-largest"]) == 0
    assert len(list((syn / "labelsTr").glob("*.nii.gz"))) == 2
    assert "wrote 2 synthetic pairs" in capsys.readouterr().out


def test_dry_run_prints_resolved_config(tmp_path, capsys):
    assert main(["train", "--config", "configs/wgan3d_gp_32.yaml", "--set", "train.steps=7", "--dry-run"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["steps"] == 7
    assert resolved["model"]["params"]["gp_weight"] == 10.0  # defaults filled in


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.stepz=3"], "train.stepz: unknown key"),
        (["train.steps=-1"], "train.steps"),
        (["model.name=dcgan"], "Did you mean 'dcgan3d'"),
        (["model.params.latent=3"], "model.params.latent: unknown key"),
        (["optim.G.type=sgd"], "optim.G.type"),
        (["train.steps"], "expected KEY=VALUE"),
    ],
)
def test_bad_configuration_is_a_clean_error_naming_the_key(overrides, message, capsys):
    args = ["train", "--config", "configs/dcgan3d_32.yaml", "--dry-run"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: configuration file not found" in capsys.readouterr().err


TRAINING_PRESETS = sorted(
    p for p in Path("configs").glob("*.yaml") if not p.stem.endswith("_grid") and not p.stem.startswith(("downstream", "study"))
)


@pytest.mark.parametrize("config", TRAINING_PRESETS, ids=lambda p: p.stem)
def test_every_training_preset_validates(config, capsys):
    assert main(["train", "--config", str(config), "--dry-run"]) == 0
