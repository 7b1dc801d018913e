"""Two-process DistributedDataParallel training (gloo, CPU) of every family with its own training path.

One ``torchrun`` launch of tests/train/ddp_worker.py trains all runs in one process group (starting
processes costs more than the tiny runs). The trainer itself fails if the replicas' parameters or
batch-norm running statistics diverge; each replica also saves its networks, and the tests compare them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.data.toy2d import prepare_toy_2d

WORKER = Path(__file__).with_name("ddp_worker.py")
# tiny parameters of tests/models/test_stylegan2_training.py, test_hagan.py, test_fastgan.py, test_training.py
SG_TINY = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16,
           "r1_interval": 2, "pl_interval": 2}  # lazy R1 and path length at steps 0 and 2 of 4
SG_OPTIM = {k: {"type": "adam", "lr": 0.0025, "betas": [0.0, 0.99]} for k in ("G", "D")}
HAGAN_TINY = {"latent_dim": 16, "feature_channels": 8, "g_max_channels": 32, "d_channels": 4, "d_max_channels": 16}
HAGAN_OPTIM = {k: {"lr": lr, "betas": [0.0, 0.99], "eps": 1e-8} for k, lr in (("G", 1e-4), ("D", 4e-4), ("E", 1e-4))}
FASTGAN_TINY = {"latent_dim": 8, "base_channels": 4}
FASTGAN_OPTIM = {k: {"lr": 2e-4, "betas": [0.5, 0.999]} for k in ("G", "D")}
WGAN_TINY = {"latent_dim": 16, "base_channels": 4, "max_channels": 16, "n_critic": 2}
WGAN_OPTIM = {k: {"lr": 2e-4} for k in ("G", "D")}

RUNS = {  # name: (model, params, optimisers, 2D data?, steps, losses every step logs, batch-norm family?)
    "stylegan2-B-SG": ("stylegan2", {**SG_TINY, "variant": "B-SG"}, SG_OPTIM, True, 4, ("loss/G", "loss/D"), False),
    "stylegan2-C-SG": ("stylegan2", {**SG_TINY, "variant": "C-SG"}, SG_OPTIM, True, 4, ("loss/G", "loss/D"), False),
    "hagan": ("hagan", HAGAN_TINY, HAGAN_OPTIM, False, 3, ("loss/D", "loss/G", "loss/E_recon_h", "loss/E_recon_g"), True),
    "fastgan": ("fastgan", FASTGAN_TINY, FASTGAN_OPTIM, True, 3, ("loss/D", "loss/D_recon", "loss/G"), True),
    "wgan3d": ("wgan3d", WGAN_TINY, WGAN_OPTIM, False, 4, ("loss/D",), True),
}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """All runs of RUNS, trained by one two-process launch; (folder holding a folder per run, the launch)."""
    root = tmp_path_factory.mktemp("ddp")
    msd = write_toy_dataset(root / "toy_msd", layout="msd")
    options = PrepareOptions(shape=(16, 16, 16), spacing=None, test_fraction=0.2, val_fraction=0.1, folds=3)
    manifests = {False: prepare_dataset([msd], root / "prepared", options, progress=False),
                 True: prepare_toy_2d(root / "toy2d", n=24, size=32)}
    configs = []
    for name, (model, params, optim, two_d, steps, _, _) in RUNS.items():
        raw = {"model": {"name": model, "params": params}, "data": {"manifest": str(manifests[two_d])}, "optim": optim,
               "train": {"steps": steps, "batch_size": 4, "log_every": 1, "checkpoint_every": steps, "progress": False},
               "out": str(root / name)}
        configs.append(root / f"{name}.yaml")
        configs[-1].write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(root), *map(str, configs)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return root, result


@pytest.mark.slow
def test_the_launch_succeeds_and_rank_0_alone_reports(ddp_runs):
    _, result = ddp_runs
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("run folder:") == len(RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_run_finishes_with_finite_losses_and_replicas_in_sync(ddp_runs, name):
    root, result = ddp_runs
    model, _, _, _, steps, every_step, batch_norm = RUNS[name]
    assert (root / name / "replica1.pt").is_file(), result.stderr[-4000:]
    records = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert all(math.isfinite(r[k]) for r in records for k in every_step)
    if model == "stylegan2":  # lazy R1 and path length ran (steps 0 and 2, logged as 1 and 3)
        assert [r["step"] for r in records if "r1" in r] == [1, 3]
        assert [r["step"] for r in records if "pl_penalty" in r] == [1, 3]
        assert all(math.isfinite(r["r1"]) and math.isfinite(r["pl_penalty"]) for r in records if "r1" in r)

    replicas = [torch.load(root / name / f"replica{rank}.pt") for rank in (0, 1)]
    state, other = replicas[0]["state"], replicas[1]["state"]
    # every parameter and buffer is the same on both replicas, but StyleGAN2's w_avg (the truncation centre):
    # each replica tracks its own w's (as in StyleGAN2-ADA); DDP broadcasts rank 0's before every forward
    per_replica = ["G.mapping.w_avg"] if model == "stylegan2" else []
    assert [k for k in state if not torch.equal(state[k], other[k])] == per_replica
    if batch_norm:
        assert replicas[0]["norms"] == ["GlobalBatchNorm"]
        running = [k for k in state if k.endswith("running_mean")]
        assert running and all(state[k].abs().sum() > 0 for k in running)  # updated from the data


@pytest.mark.slow
def test_global_batch_norm_equals_batch_norm_on_the_whole_batch(ddp_runs):
    root, result = ddp_runs
    for rank in (0, 1):
        differences = json.loads((root / f"batch_norm{rank}.json").read_text())
        assert set(differences) == {"output", "input_grad", "param_grads", "running_mean", "running_var"}
        assert max(differences.values()) < 1e-5, differences
