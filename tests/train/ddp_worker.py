"""One process of the two-process DDP tests in tests/train/test_ddp.py (launched by ``torchrun``).

Trains every run config given, one after the other in one process group, through the CLI
(``synthmed train --config``), with `Trainer.run` wrapped to save this replica's networks (parameters
and buffers) and the names of its batch-norm layer types as ``replica<rank>.pt`` in each run folder.
Then checks `GlobalBatchNorm` against plain batch norm on the whole batch (a known answer) and saves
the largest differences as ``OUT/batch_norm<rank>.json``.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_worker.py OUT CONFIG.yaml...
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from synthmed.cli import main
from synthmed.train.distributed import GlobalBatchNorm
from synthmed.train.loop import Trainer

run_without_saving = Trainer.run


def run_and_save_replica(trainer: Trainer) -> Path:
    run_dir = run_without_saving(trainer)
    nets = trainer.model.nets
    norms = sorted({type(m).__name__ for m in nets.modules() if isinstance(m, nn.modules.batchnorm._NormBase)})
    state = {k: v.detach().cpu().clone() for k, v in nets.state_dict().items()}
    torch.save({"state": state, "norms": norms}, run_dir / f"replica{dist.get_rank()}.pt")
    return run_dir


def batch_norm_differences() -> dict[str, float]:
    """GlobalBatchNorm on this rank's half of a batch against BatchNorm2d on the whole batch: the largest
    differences of outputs, input gradients, weight and bias gradients (summed over ranks), running stats."""
    rank, generator = dist.get_rank(), torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 5, 5, generator=generator) * 3 + 1
    upstream = torch.randn(8, 3, 5, 5, generator=generator)  # d loss / d output
    reference = nn.BatchNorm2d(3, momentum=0.3)
    nn.init.normal_(reference.weight, 1.0, 0.5, generator=generator)
    nn.init.normal_(reference.bias, 0.0, 0.5, generator=generator)
    synced = GlobalBatchNorm.replacing(copy.deepcopy(reference))
    whole, half = x.clone().requires_grad_(), x[rank * 4 : rank * 4 + 4].clone().requires_grad_()
    expected, got = reference(whole), synced(half)
    (expected * upstream).sum().backward()
    (got * upstream[rank * 4 : rank * 4 + 4]).sum().backward()
    mine = slice(rank * 4, rank * 4 + 4)
    param_grads = torch.cat([synced.weight.grad, synced.bias.grad])
    dist.all_reduce(param_grads)

    def diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max())

    return {
        "output": diff(got, expected[mine]), "input_grad": diff(half.grad, whole.grad[mine]),
        "param_grads": diff(param_grads, torch.cat([reference.weight.grad, reference.bias.grad])),
        "running_mean": diff(synced.running_mean, reference.running_mean),
        "running_var": diff(synced.running_var, reference.running_var),
    }


if __name__ == "__main__":
    out, configs = Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]]
    Trainer.run = run_and_save_replica
    for config in configs:
        if main(["train", "--config", str(config)]) != 0:
            sys.exit(2)
    (out / f"batch_norm{dist.get_rank()}.json").write_text(json.dumps(batch_norm_differences()))
