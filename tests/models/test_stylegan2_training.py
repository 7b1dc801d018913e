"""StyleGAN2 end to end through the trainer on the 2D toy dataset: train, checkpoint, resume, sample, MC-SG."""

from __future__ import annotations

import json

import pytest
import torch

from synthmed.models.stylegan2.model import StyleGAN2
from synthmed.train.checkpoint import load_generator
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

TINY = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16}
OPTIM = {"type": "adam", "lr": 0.0025, "betas": [0.0, 0.99]}


pytestmark = pytest.mark.usefixtures("one_thread")


def run_config(manifest, out, steps: int, **params):
    raw = {
        "model": {"name": "stylegan2", "params": {**TINY, **params}},
        "data": {"manifest": str(manifest)},
        "optim": {"G": OPTIM, "D": OPTIM},
        "train": {"steps": steps, "batch_size": 4, "log_every": 1, "checkpoint_every": 4, "progress": False,
                  "ema_kimg": 0.01},
        "out": str(out),
    }
    return resolve_config(raw)


def logged(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("variant", ["B-SG", "M-SG", "C-SG"])
def test_train_then_sample_every_variant(variant, toy_prepared_2d, tmp_path):
    run = train(run_config(toy_prepared_2d, tmp_path / "run", steps=17, variant=variant))
    records = logged(run)
    assert [r["step"] for r in records] == list(range(1, 18))
    # lazy regularisation: R1 on steps 0 and 16, path length on every 4th step (logged as step + 1)
    assert [r["step"] for r in records if "r1" in r] == [1, 17]
    assert [r["step"] for r in records if "pl_penalty" in r] == [1, 5, 9, 13, 17]
    assert all(r["r1"] > 0 for r in records if "r1" in r)
    assert all("loss/G" in r and "loss/D" in r and "ada_p" in r for r in records)
    assert (run / "generator.safetensors").is_file()

    model, _ = load_generator(run)
    assert isinstance(model, StyleGAN2) and model.variant == variant
    masks = torch.zeros(3, 32, 32, dtype=torch.long)
    masks[:, 10:20, 8:16] = 1
    images, out_masks = model.sample(3, seed=0, masks=masks if variant == "C-SG" else None)
    assert images.shape == (3, 0 if variant == "M-SG" else 1, 32, 32) and out_masks.shape == (3, 32, 32)
    assert torch.isfinite(images).all()


def test_mc_sg_chain_m_sg_masks_into_c_sg(toy_prepared_2d, tmp_path):
    mask_run = train(run_config(toy_prepared_2d, tmp_path / "m", steps=2, variant="M-SG"))
    image_run = train(run_config(toy_prepared_2d, tmp_path / "c", steps=2, variant="C-SG"))
    mask_model, _ = load_generator(mask_run)
    image_model, _ = load_generator(image_run)
    empty, masks = mask_model.sample(4, seed=1)
    assert empty.shape == (4, 0, 32, 32)
    images, same_masks = image_model.sample(4, seed=2, masks=masks)
    assert images.shape == (4, 1, 32, 32) and torch.equal(same_masks, masks)


def test_resume_continues_ada_exactly(toy_prepared_2d, tmp_path):
    # A fast ADA (p moves 4 * 2 / 100 = 0.08 per adjustment). D starts with negative real logits
    # (r_t = -1, p stays 0) and grows confident within ~10 steps, so p rises after the resume at step 8.
    fast_ada = {"augment": {"mode": "ada", "speed_kimg": 0.1, "interval": 2, "target": 0.0}}
    straight = train(run_config(toy_prepared_2d, tmp_path / "straight", steps=16, **fast_ada))
    train(run_config(toy_prepared_2d, tmp_path / "resumed", steps=8, **fast_ada))
    resumed = train(run_config(toy_prepared_2d, tmp_path / "resumed", steps=16, **fast_ada), resume=True)
    final = {name: logged(run)[-1] for name, run in [("straight", straight), ("resumed", resumed)]}
    assert final["straight"]["ada_p"] > 0.05
    assert final["resumed"]["ada_p"] == pytest.approx(final["straight"]["ada_p"], abs=1e-9)
    after_8 = logged(resumed)[7]["ada_p"]
    assert final["resumed"]["ada_p"] != after_8  # p kept moving after the resume, from where it was
    model, state = load_generator(resumed)
    model.load_extra_state(state["extra"])
    assert model.augment.p == pytest.approx(final["straight"]["ada_p"], abs=1e-6)
