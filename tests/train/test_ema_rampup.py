"""EMA ramp-up (StyleGAN2-ADA's ``ema_rampup``): the half-life grows with the images seen, capped at ema_kimg."""

import math

import pytest
import torch

from synthmed.models.registry import DataInfo, build_model
from synthmed.train.config import OptimizerSection, TrainSection
from synthmed.train.loop import TrainStep, ema_beta, ema_half_life, make_optimizer


def test_half_life_at_known_image_counts():
    assert ema_half_life(0, ema_kimg=0.5, ema_rampup=0.05) == 0.0
    assert ema_half_life(1000, ema_kimg=0.5, ema_rampup=0.05) == pytest.approx(50.0)
    assert ema_half_life(100_000, ema_kimg=0.5, ema_rampup=0.05) == pytest.approx(500.0)  # capped at ema_kimg
    assert ema_half_life(0, ema_kimg=0.5, ema_rampup=None) == pytest.approx(500.0)  # no ramp-up


def test_beta_follows_the_half_life():
    assert ema_beta(8, 0.5, 0.05, images_seen=0) == 0.0  # first step: the EMA copies the network
    assert math.isclose(ema_beta(50, 0.5, 0.05, images_seen=1000), 0.5)  # one half-life (50 images) per step
    assert math.isclose(ema_beta(10, 0.01, None), 0.5)
    assert ema_beta(8, 0.0, 0.05, images_seen=10_000) == 0.0  # ema_kimg 0: no averaging


def test_step_beta_depends_only_on_the_step_so_resume_is_exact():
    train = TrainSection(batch_size=4, ema_kimg=0.5)
    assert train.ema_rampup == 0.05
    model = build_model("dcgan2d", {"latent_dim": 8, "base_channels": 4, "max_channels": 8}, DataInfo((32, 32), 1, 2))
    first, second = TrainStep(model, {}, train), TrainStep(model, {}, train)
    assert [first.ema_beta(s) for s in (0, 5, 250, 10_000)] == [second.ema_beta(s) for s in (0, 5, 250, 10_000)]
    assert first.ema_beta(250) == pytest.approx(0.5 ** (4 / 50))  # 1000 images seen -> half-life 50 images
    assert first.ema_beta(10_000) == pytest.approx(0.5 ** (4 / 500))


def _ema_distance_after_short_run(ema_rampup: float | None, steps: int = 12) -> float:
    """Mean |EMA - G| over the generator's weights after a short run (same seed: the same G trajectory)."""
    torch.manual_seed(0)
    model = build_model("dcgan2d", {"latent_dim": 8, "base_channels": 4, "max_channels": 16}, DataInfo((32, 32), 1, 2))
    optimizers = {name: make_optimizer(OptimizerSection(lr=2e-3), net.parameters()) for name, net in model.nets.items()}
    step = TrainStep(model, optimizers, TrainSection(batch_size=4, ema_kimg=0.5, ema_rampup=ema_rampup))
    gen = torch.Generator().manual_seed(1)
    real = model.codec.encode(torch.rand(4, 1, 32, 32, generator=gen) * 2 - 1, torch.randint(0, 2, (4, 32, 32), generator=gen))
    for i in range(steps):
        step(i, real)
    pairs = list(zip(model.ema_net.parameters(), model.nets["G"].parameters()))
    return sum((a - b).abs().sum().item() for a, b in pairs) / sum(b.numel() for _, b in pairs)


def test_short_run_ema_is_closer_to_the_generator_with_rampup():
    # 12 steps x 4 images = 48 images against a 500-image half-life: without ramp-up the EMA is still
    # 0.5 ** (48 / 500) = 94 % the random initial weights; with ramp-up its half-life is at most 2.4 images.
    with_rampup, without = _ema_distance_after_short_run(0.05), _ema_distance_after_short_run(None)
    assert with_rampup < 0.5 * without


def _tiny_run(manifest, out, ema_rampup):
    from synthmed.train.config import resolve_config
    from synthmed.train.loop import train

    return train(resolve_config({
        "model": {"name": "dcgan2d", "params": {"latent_dim": 8, "base_channels": 4, "max_channels": 16}},
        "data": {"manifest": str(manifest)},
        "optim": {"G": {}, "D": {}},
        "train": {"steps": 2, "batch_size": 4, "ema_kimg": 0.5, "ema_rampup": ema_rampup, "checkpoint_every": 2,
                  "progress": False},
        "out": str(out),
    }))


def test_sampling_warns_once_when_the_run_is_shorter_than_its_ema_half_life(toy_prepared_2d, tmp_path, caplog):
    import json
    import logging

    from synthmed.cli import main

    without = _tiny_run(toy_prepared_2d, tmp_path / "without", ema_rampup=None)  # 8 images, half-life 500
    with caplog.at_level(logging.WARNING):
        assert main(["sample", "--checkpoint", str(without), "-n", "2", "--out", str(tmp_path / "a")]) == 0
    warnings = [r.getMessage() for r in caplog.records if "EMA half-life" in r.getMessage()]
    assert len(warnings) == 1 and "8 training images" in warnings[0] and "--no-ema" in warnings[0]
    card_warnings = json.loads((tmp_path / "a" / "card.json").read_text())["warnings"]
    assert [w for w in card_warnings if "EMA half-life" in w] == warnings

    caplog.clear()
    ramped = _tiny_run(toy_prepared_2d, tmp_path / "ramped", ema_rampup=0.05)  # half-life 0.4 images at the end
    with caplog.at_level(logging.WARNING):
        assert main(["sample", "--checkpoint", str(ramped), "-n", "2", "--out", str(tmp_path / "b")]) == 0
        assert main(["sample", "--checkpoint", str(without), "-n", "2", "--out", str(tmp_path / "c"), "--no-ema"]) == 0
    assert not [r for r in caplog.records if "EMA half-life" in r.getMessage()]
    card_warnings = json.loads((tmp_path / "b" / "card.json").read_text())["warnings"]
    assert not [w for w in card_warnings if "EMA half-life" in w]
