"""The generator EMA advances once per training step, also when a lazy regulariser steps G again."""

from synthmed.train.config import resolve_config
from synthmed.train.loop import Trainer

TINY = {"z_dim": 8, "w_dim": 8, "channel_base": 128, "channel_max": 8, "augment": {"mode": "none"},
        "pl_interval": 2, "r1_interval": 2}


def test_ema_is_updated_once_per_step(toy_prepared_2d, tmp_path):
    config = resolve_config({
        "model": {"name": "stylegan2", "params": TINY},
        "data": {"manifest": str(toy_prepared_2d)},
        "optim": {"G": {}, "D": {}},
        "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 4, "progress": False},
        "out": str(tmp_path / "run"),
    })
    trainer = Trainer(config)
    g_phases = [p for p in trainer.model.phases() if p.optimizer == "G"]
    assert len(g_phases) == 2  # main loss and the lazy path-length phase
    calls = []
    original = trainer.model.update_ema
    trainer.model.update_ema = lambda beta: (calls.append(beta), original(beta))
    trainer.run()
    assert len(calls) == 4
