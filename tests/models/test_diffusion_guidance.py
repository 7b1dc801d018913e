"""`synthmed sample --guidance W`: the classifier-free guidance scale of one sampling, instead of the run's."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.cli import main
from synthmed.data.manifest import load_manifest
from synthmed.data.toy2d import prepare_toy_2d
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

TINY = {"channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8, "norm_num_groups": 4,
        "scheduler": "rflow"}
pytestmark = pytest.mark.usefixtures("one_thread")


def two_class_manifest(tmp_path: Path) -> Path:
    """16x16 toy discs, every other case of class "b" (the images are not changed: only the labels matter here)."""
    manifest = load_manifest(prepare_toy_2d(tmp_path / "toy", n=12, size=16))
    data = json.loads(manifest.path.read_text())
    for i, case in enumerate(data["cases"]):
        case["kind"] = "b" if i % 2 else "a"
    manifest.path.write_text(json.dumps(data))
    return manifest.path


def tiny_run(manifest: Path, out: Path, classes: bool) -> Path:
    params = {**TINY, "num_classes": 2, "guidance_scale": 1.5} if classes else TINY
    data = {"manifest": str(manifest), **({"class_key": "kind", "classes": ["a", "b"]} if classes else {})}
    return train(resolve_config({
        "model": {"name": "diffusion", "params": params}, "data": data, "optim": {"unet": {"lr": 1e-3}},
        "train": {"steps": 2, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "progress": False},
        "out": str(out)}))


def images_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "imagesTr").glob("*.png"))])


def sample(run: Path, out: Path, *extra: str) -> int:
    return main(["sample", "--checkpoint", str(run), "-n", "3", "--steps", "3", "--out", str(out), *extra])


def test_guidance_overrides_the_runs_scale_and_is_recorded(tmp_path, capsys):
    run = tiny_run(two_class_manifest(tmp_path), tmp_path / "run", classes=True)
    assert sample(run, tmp_path / "default") == 0
    assert sample(run, tmp_path / "same", "--guidance", "1.5") == 0
    assert sample(run, tmp_path / "strong", "--guidance", "4") == 0
    cards = {name: json.loads((tmp_path / name / "card.json").read_text()) for name in ("default", "same", "strong")}
    assert [cards[n]["config"]["guidance"] for n in ("default", "same", "strong")] == [1.5, 1.5, 4.0]
    assert np.array_equal(images_of(tmp_path / "default"), images_of(tmp_path / "same"))
    assert not np.array_equal(images_of(tmp_path / "default"), images_of(tmp_path / "strong"))
    capsys.readouterr()
    assert sample(run, tmp_path / "negative", "--guidance", "-1") == 2
    assert "--guidance must be at least 0" in capsys.readouterr().err
    assert not (tmp_path / "negative").exists()


def test_guidance_is_refused_for_a_run_without_classes(tmp_path, capsys):
    run = tiny_run(two_class_manifest(tmp_path), tmp_path / "run", classes=False)
    capsys.readouterr()
    assert sample(run, tmp_path / "out", "--guidance", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--guidance: this Diffusion has no classifier-free guidance" in err, err
    assert not (tmp_path / "out").exists()
