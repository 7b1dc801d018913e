import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthmed.errors import UserError
from synthmed.train.checkpoint import list_checkpoints
from synthmed.train.config import resolve_config
from synthmed.train.loop import BatchSchedule, train
from synthmed.train.distributed import DistEnv


def tiny_config(manifest: Path, out: Path, model: str = "dcgan3d", steps: int = 8, **params) -> dict:
    return {
        "model": {"name": model, "params": {"latent_dim": 16, "base_channels": 4, "max_channels": 16, **params}},
        "data": {"manifest": str(manifest)},
        "optim": {"G": {"lr": 2e-4}, "D": {"lr": 2e-4}},
        "train": {"steps": steps, "batch_size": 4, "log_every": 2, "checkpoint_every": 4, "progress": False},
        "out": str(out),
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "model,params",
    [("dcgan3d", {}), ("wgan3d", {"constraint": "gp", "n_critic": 2}), ("wgan3d", {"constraint": "clip", "d_norm": "batch", "n_critic": 2}),
     ("dcgan3d", {"pairing": {"layout": "zconcat", "mask_encoding": "scaled"}})],
)
def test_tiny_training_run_has_finite_losses_and_all_outputs(toy_prepared, tmp_path, model, params):
    run = train(resolve_config(tiny_config(toy_prepared, tmp_path / "run", model, **params)))
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert all(math.isfinite(v) for r in records for k, v in r.items() if k.startswith("loss/"))
    assert {"loss/D", "loss/G"} <= set(records[-1])
    assert (run / "config.yaml").is_file() and (run / "plots" / "losses.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in list_checkpoints(run)] == ["step_00000004.pt", "step_00000008.pt"]
    state = torch.load(list_checkpoints(run)[-1], weights_only=True)  # no pickled classes
    assert state["step"] == 8 and {k.split(".")[0] for k in state["nets"]} == {"G", "D"}
    exported = load_file(run / "generator.safetensors")  # the EMA generator, for sharing
    assert all(torch.equal(exported[k], v) for k, v in state["G_ema"].items())


def test_resume_continues_the_uninterrupted_loss_curve_exactly(toy_prepared, tmp_path):
    straight = train(resolve_config(tiny_config(toy_prepared, tmp_path / "straight", steps=12)))
    interrupted = tiny_config(toy_prepared, tmp_path / "resumed", steps=6)
    interrupted["train"]["checkpoint_every"] = 3
    train(resolve_config(interrupted))
    resumed = train(resolve_config(interrupted, ["train.steps=12"]), resume=True)

    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    keys = ["step", "loss/D", "loss/G"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    final_a = torch.load(list_checkpoints(straight)[-1], weights_only=True)
    final_b = torch.load(list_checkpoints(resumed)[-1], weights_only=True)
    for name, tensor in final_a["G_ema"].items():
        assert torch.equal(tensor, final_b["G_ema"][name]), name


def test_new_run_refuses_a_folder_with_checkpoints(toy_prepared, tmp_path):
    config = resolve_config(tiny_config(toy_prepared, tmp_path / "run", steps=4))
    train(config)
    with pytest.raises(UserError, match="--resume"):
        train(config)


def test_resume_without_checkpoints_is_an_error(toy_prepared, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(resolve_config(tiny_config(toy_prepared, tmp_path / "empty")), resume=True)


def test_optimizer_names_must_match_networks(toy_prepared, tmp_path):
    raw = tiny_config(toy_prepared, tmp_path / "run")
    raw["optim"] = {"G": {}, "Disc": {}}
    with pytest.raises(UserError, match="networks \\['D', 'G'\\]"):
        train(resolve_config(raw))


def test_batch_schedule_shuffles_every_epoch_and_covers_all_cases():
    schedule = BatchSchedule(n_cases=10, batch_size=5, seed=0, env=DistEnv())
    epoch0 = torch.cat([schedule.indices(0), schedule.indices(1)])
    epoch1 = torch.cat([schedule.indices(2), schedule.indices(3)])
    assert sorted(epoch0.tolist()) == list(range(10)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    ranks = [BatchSchedule(10, 4, 0, DistEnv(rank=r, world_size=2)).indices(0) for r in range(2)]
    assert len(set(ranks[0].tolist()) | set(ranks[1].tolist())) == 4  # the global batch, split in two


def test_resume_removes_the_leftovers_of_an_interrupted_checkpoint_write(toy_prepared, tmp_path):
    run = train(resolve_config(tiny_config(toy_prepared, tmp_path / "run", steps=2)))
    leftover = run / "checkpoints" / ".step_00000004.pt.x1y2.tmp"  # as a kill during atomic_torch_save leaves it
    leftover.write_bytes(b"half a checkpoint")
    train(resolve_config(tiny_config(toy_prepared, run, steps=4)), resume=True)
    assert not leftover.exists()
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt"]
