"""Diffusion models in the trainer and the sampler: runs, exact resume, the MC chain, the CLI, and learning."""

import json
from pathlib import Path

import pytest
import torch

from synthmed.cli import main
from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.toy2d import prepare_toy_2d
from synthmed.models.registry import build_model
from synthmed.sample.sampler import sample_to_folder
from synthmed.train.checkpoint import EMA_KEY, list_checkpoints, load_generator
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

TINY = {"channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8, "norm_num_groups": 4}
pytestmark = pytest.mark.usefixtures("one_thread")


def run_config(manifest: Path, out: Path, steps: int = 4, lr: float = 2e-4, **params) -> dict:
    return {
        "model": {"name": "diffusion", "params": {**TINY, **params}},
        "data": {"manifest": str(manifest)},
        "optim": {"unet": {"lr": lr, "betas": [0.9, 0.999]}},
        "train": {"steps": steps, "batch_size": 4, "log_every": 2, "checkpoint_every": 2, "progress": False},
        "out": str(out),
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("params", [{"variant": "joint"}, {"variant": "mask_only", "scheduler": "rflow"}])
def test_train_then_sample_to_png(params, toy_prepared_2d, tmp_path):
    run = train(resolve_config(run_config(toy_prepared_2d, tmp_path / "run", **params)))
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4] and all(r["loss/denoise"] > 0 for r in records)
    state = torch.load(list_checkpoints(run)[-1], weights_only=True)
    assert {k.split(".")[0] for k in state["nets"]} == {"unet"} and state[EMA_KEY]
    folder = sample_to_folder(run, 2, tmp_path / "synthetic", steps=3)
    assert len(list((folder / "labelsTr").glob("*.png"))) == 2
    card = json.loads((folder / "card.json").read_text())
    assert card["config"]["steps"] == 3


def test_resume_continues_the_uninterrupted_loss_curve_exactly(toy_prepared_2d, tmp_path):
    straight = train(resolve_config(run_config(toy_prepared_2d, tmp_path / "straight", steps=6)))
    interrupted = run_config(toy_prepared_2d, tmp_path / "resumed", steps=4)
    train(resolve_config(interrupted))
    resumed = train(resolve_config(interrupted, ["train.steps=6"]), resume=True)
    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    assert [[r["step"], r["loss/denoise"]] for r in a] == [[r["step"], r["loss/denoise"]] for r in b]
    final_a = torch.load(list_checkpoints(straight)[-1], weights_only=True)
    final_b = torch.load(list_checkpoints(resumed)[-1], weights_only=True)
    for name, tensor in final_a[EMA_KEY].items():
        assert torch.equal(tensor, final_b[EMA_KEY][name]), name


def test_mask_only_masks_chain_into_the_mask_conditional_model(toy_prepared_2d, tmp_path):
    masks_run = train(resolve_config(run_config(toy_prepared_2d, tmp_path / "masks", steps=2, variant="mask_only")))
    image_run = train(resolve_config(run_config(toy_prepared_2d, tmp_path / "images", steps=2, variant="mask_conditional")))
    chained = sample_to_folder(image_run, 3, tmp_path / "chained", mask_checkpoint=masks_run, steps=2)
    assert len(list((chained / "imagesTr").glob("*.png"))) == 3
    # and any masks a user brings: here the chained set's own masks
    again = sample_to_folder(image_run, None, tmp_path / "given", masks_dir=chained, steps=2, sampler="ddpm")
    assert len(list((again / "imagesTr").glob("*.png"))) == 3


def test_cli_sampler_and_steps(toy_prepared_2d, tmp_path, capsys):
    run = train(resolve_config(run_config(toy_prepared_2d, tmp_path / "run", steps=2, scheduler="rflow")))
    base = ["sample", "--checkpoint", str(run), "-n", "2"]
    assert main([*base, "--out", str(tmp_path / "a"), "--sampler", "rflow", "--steps", "2"]) == 0
    assert "wrote 2 synthetic pairs" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "b"), "--sampler", "ddim"]) == 2
    assert "--sampler ddim: this Diffusion offers rflow" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


# --- learning: on toy discs whose answer is known ---------------------------------------------------

LEARNING = {"channels": [16, 32], "attention_levels": [False, True], "num_head_channels": 16, "norm_num_groups": 8,
            "scheduler": "rflow"}


def toy_discs(tmp_path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """16x16 toy discs (bright disc = label 1 on a dark background): manifest, train images and masks."""
    manifest = prepare_toy_2d(tmp_path / "toy", n=24, size=16)
    loaded = load_manifest(manifest)
    images, masks = load_arrays(loaded, loaded.split_ids("train"))
    return manifest, torch.from_numpy(images), torch.from_numpy(masks)


def learning_run(manifest: Path, out: Path, variant: str, steps: int):
    config = resolve_config({
        "model": {"name": "diffusion", "params": {**LEARNING, "variant": variant}},
        "data": {"manifest": str(manifest)},
        "optim": {"unet": {"lr": 2e-3, "betas": [0.9, 0.999]}},
        "train": {"steps": steps, "batch_size": 8, "ema_kimg": 0.05, "log_every": 50, "checkpoint_every": steps,
                  "progress": False},
        "out": str(out),
    })
    torch.manual_seed(0)
    untrained = build_model("diffusion", config.model.params, load_generator_info(manifest))
    trained, _ = load_generator(train(config))
    return untrained, trained


def load_generator_info(manifest: Path):
    from synthmed.models.registry import DataInfo

    loaded = load_manifest(manifest)
    return DataInfo(tuple(loaded.cases[0]["shape"]), 1, len(loaded.labels))


def pair_statistics(images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Mask area (fraction of pixels) and mean intensity inside and outside the mask."""
    inside = masks > 0
    return {"area": float(inside.float().mean()), "inside": float(images[:, 0][inside].mean()),
            "outside": float(images[:, 0][~inside].mean())}


def contrast(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean intensity inside the masks minus outside."""
    stats = pair_statistics(images, masks)
    return stats["inside"] - stats["outside"]


@pytest.mark.slow
def test_joint_model_learns_the_discs_area_and_intensities(tmp_path):
    manifest, images, masks = toy_discs(tmp_path)
    real = pair_statistics(images, masks)  # about 0.16 of the pixels; +0.6 inside, -0.6 outside
    untrained, trained = learning_run(manifest, tmp_path / "run", "joint", steps=200)
    before = pair_statistics(*untrained.sample(16, seed=0, steps=25))
    after = pair_statistics(*trained.sample(16, seed=0, steps=25))
    for key in real:
        error_before, error_after = abs(before[key] - real[key]), abs(after[key] - real[key])
        assert error_after < 0.3 * error_before, (key, real[key], before[key], after[key])


@pytest.mark.slow
def test_mask_conditional_image_is_bright_exactly_where_a_new_mask_says(tmp_path):
    manifest, images, masks = toy_discs(tmp_path)
    untrained, trained = learning_run(manifest, tmp_path / "run", "mask_conditional", steps=150)
    # masks it never saw: squares of random size and place instead of discs
    rng = torch.Generator().manual_seed(5)
    squares = torch.zeros(16, 16, 16, dtype=torch.long)
    for square in squares:
        side = int(torch.randint(4, 9, (1,), generator=rng))
        top, left = (int(v) for v in torch.randint(0, 16 - side, (2,), generator=rng))
        square[top : top + side, left : left + side] = 1
    real = contrast(images, masks)  # about 1.2
    before = contrast(untrained.sample(16, seed=0, masks=squares, steps=25)[0], squares)
    after = contrast(trained.sample(16, seed=0, masks=squares, steps=25)[0], squares)
    assert abs(after - real) < 0.3 * abs(before - real), (real, before, after)
