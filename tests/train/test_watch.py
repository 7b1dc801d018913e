"""Watching a run: sample grids in TensorBoard, the periodic fidelity figure and checkpoints/best.pt."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.cli import main
from synthmed.errors import UserError
from synthmed.metrics.monitor import FidelityMonitor, fidelity_monitor
from synthmed.train.checkpoint import best_checkpoint_path, list_checkpoints, load_checkpoint, load_generator
from synthmed.train.config import TrainSection, resolve_config
from synthmed.train.loop import train
from synthmed.train.watch import MonitorContext, draw_fixed_pairs, sample_grid
from tests.train.test_training import read_jsonl, tiny_config


@pytest.fixture(scope="session")
def manifest(toy_prepared_with_val):
    return toy_prepared_with_val


def watched_config(manifest, out, steps=6, **train):
    config = tiny_config(manifest, out, steps=steps)
    config["train"].update({"log_every": 3, "checkpoint_every": 3, "keep_checkpoints": 1, "device": "cpu", **train})
    return config


class ScriptedMonitor:
    """A monitor with set figures, which also draws from every global RNG (watching must not move them)."""

    key = "fidelity/scripted"

    def __init__(self, figures):
        self.figures = dict(figures)

    def measure(self, model, step):
        torch.rand(3), np.random.rand(), __import__("random").random()
        return {self.key: self.figures[step]}


def test_watching_is_off_by_default():
    section = TrainSection()
    assert section.sample_every is None and section.fidelity_every is None


def test_the_grid_shows_each_pair_with_its_mask_in_colour():
    images = np.full((3, 1, 8, 8), -1.0, np.float32)  # black images
    masks = np.zeros((3, 8, 8), np.int64)
    masks[:, 2:4, 2:4] = 1
    grid = sample_grid(images, masks, columns=2)
    assert grid.shape == (20, 20, 3) and grid.dtype == np.uint8  # 2 pairs a row, 2-pixel gaps
    assert tuple(grid[0, 0]) == (0, 0, 0) and grid[2, 2, 2] > grid[2, 2, 0] > 0  # label 1: blue over black
    assert tuple(grid[0, 8]) == (128, 128, 128) and tuple(grid[10, 10]) == (0, 0, 0)
    volumes = np.zeros((2, 1, 4, 6, 5), np.float32)
    assert sample_grid(volumes, np.zeros((2, 4, 6, 5), np.int64)).shape == (8, 2 * (5 + 5 + 6 + 3 + 2), 3)


def test_sample_grids_are_written_to_tensorboard(manifest, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(resolve_config(watched_config(manifest, tmp_path / "run", steps=4, sample_every=2, sample_count=4)))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    written = events.Images("samples")
    assert [e.step for e in written] == [2, 4]
    last = np.asarray(Image.open(io.BytesIO(written[-1].encoded_image_string)).convert("RGB"))
    model, _ = load_generator(run)  # the final EMA generator drew the last grid from seeds 0..3
    assert np.array_equal(last, sample_grid(*draw_fixed_pairs(model, 4)))
    assert np.array_equal(np.asarray(Image.open(run / "samples" / "step_00000004.png")), last)
    assert not best_checkpoint_path(run).exists()  # no fidelity monitor by default


def test_best_checkpoint_is_the_one_with_the_lowest_logged_figure(manifest, tmp_path):
    figures = {2: 3.0, 4: 1.0, 6: 2.0}
    config = resolve_config(watched_config(manifest, tmp_path / "run", fidelity_every=2))
    run = train(config, monitor_factory=lambda context: ScriptedMonitor(figures))
    logged = {r["step"]: r["fidelity/scripted"] for r in read_jsonl(run / "metrics.jsonl") if "fidelity/scripted" in r}
    assert logged == figures
    best = load_checkpoint(best_checkpoint_path(run))
    assert best["step"] == 4 and best["best"] == {"key": "fidelity/scripted", "value": 1.0, "step": 4}
    assert [p.name for p in list_checkpoints(run)] == ["step_00000006.pt"]  # keep_checkpoints: 1 left best.pt


def test_watching_does_not_change_the_training(manifest, tmp_path):
    plain = train(resolve_config(watched_config(manifest, tmp_path / "plain")))
    watched = train(resolve_config(watched_config(manifest, tmp_path / "watched", sample_every=1, fidelity_every=1)),
                    monitor_factory=lambda context: ScriptedMonitor({s: float(s) for s in range(1, 7)}))
    losses = [[r[k] for k in ("step", "loss/D", "loss/G")] for r in read_jsonl(plain / "metrics.jsonl")]
    watched_losses = [[r[k] for k in ("step", "loss/D", "loss/G")] for r in read_jsonl(watched / "metrics.jsonl")
                      if "loss/D" in r]
    assert losses == watched_losses


def test_fidelity_every_needs_a_monitor(manifest, tmp_path):
    with pytest.raises(UserError, match="train.fidelity_every"):
        train(resolve_config(watched_config(manifest, tmp_path / "run", fidelity_every=2)))


@pytest.fixture(scope="module")
def monitored_run(manifest, tmp_path_factory):
    """A run watched by the real fidelity monitor (KID in the autoencoder and radiomics spaces), via the CLI."""
    config = watched_config(manifest, tmp_path_factory.mktemp("monitored") / "run", fidelity_every=2)
    config["train"]["fidelity"] = {"spaces": ["autoencoder", "radiomics"], "samples": 4, "autoencoder_steps": 5}
    path = tmp_path_factory.mktemp("config") / "run.yaml"
    path.write_text(json.dumps(config))
    assert main(["train", "--config", str(path)]) == 0
    return resolve_config(config)


def test_the_fidelity_monitor_logs_kid_and_keeps_the_best(monitored_run):
    run = Path(monitored_run.out)
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "fidelity/kid_autoencoder" in r]
    assert [r["step"] for r in records] == [2, 4, 6] and all("fidelity/kid_radiomics" in r for r in records)
    lowest = min(records, key=lambda r: r["fidelity/kid_autoencoder"])
    best_path = best_checkpoint_path(run)
    assert load_checkpoint(best_path)["step"] == lowest["step"]
    # measured again on best.pt's generator, the figure is the one logged
    from synthmed.data.dataset import load_arrays
    from synthmed.data.manifest import load_manifest

    m = load_manifest(monitored_run.data.manifest)
    images, masks = load_arrays(m, m.split_ids("train"))
    monitor = fidelity_monitor(MonitorContext(monitored_run, m, images, masks))
    assert isinstance(monitor, FidelityMonitor)
    model, _ = load_generator(best_path)
    again = monitor.measure(model, lowest["step"])
    assert again["fidelity/kid_autoencoder"] == pytest.approx(lowest["fidelity/kid_autoencoder"], rel=1e-6)


def test_sample_best_draws_from_the_best_checkpoint(monitored_run, tmp_path):
    run = Path(monitored_run.out)
    assert main(["sample", "--checkpoint", str(run), "--best", "-n", "2", "--out", str(tmp_path / "s")]) == 0
    card = json.loads((tmp_path / "s" / "card.json").read_text())
    assert card["checkpoint"]["path"] == str(best_checkpoint_path(run))
    assert main(["sample", "--checkpoint", str(best_checkpoint_path(run)), "--best", "-n", "2",
                 "--out", str(tmp_path / "t")]) == 2  # --best needs the run folder


def test_a_resumed_run_remembers_its_best_figure(manifest, tmp_path):
    out = tmp_path / "run"
    first = watched_config(manifest, out, steps=4, fidelity_every=2, checkpoint_every=2)
    train(resolve_config(first), monitor_factory=lambda context: ScriptedMonitor({2: 3.0, 4: 1.0}))
    figures = {6: 2.0, 8: 5.0}  # worse than step 4's 1.0: best.pt must stay step 4
    train(resolve_config(first, ["train.steps=8"]), resume=True, monitor_factory=lambda context: ScriptedMonitor(figures))
    best = load_checkpoint(best_checkpoint_path(out))
    assert best["step"] == 4 and best["best"]["value"] == 1.0
    assert load_checkpoint(out)["best"] == {"key": "fidelity/scripted", "value": 1.0, "step": 4}
