"""What the training benchmarks share: timing the trainer's own step (`synthmed.train.loop.TrainStep`), and peak memory."""

from __future__ import annotations

import contextlib
import resource
import time

import torch

from synthmed.train.config import TrainSection
from synthmed.train.loop import TrainStep


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, as the trainer uses; nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mib(device: torch.device) -> float:
    """Max allocated memory on CUDA, max RSS of this process on the CPU (KiB on Linux), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_training_steps(model, optimizers: dict, real: torch.Tensor, warmup: int, steps: int,
                        classes: torch.Tensor | None = None, train: TrainSection | None = None) -> list[float]:
    """Seconds of each of ``steps`` training steps after ``warmup`` untimed ones.

    Each step is the trainer's `TrainStep` on ``real`` (and ``classes``, for class-conditional models):
    every phase due at the step, bf16 autocast on CUDA, the EMA update once per step.

    Args:
        train: the training settings the step reads (amp, batch size and EMA half-life); default: the
            trainer's defaults for a batch of ``len(real)``.
    """
    device = real.device
    run_step = TrainStep(model, optimizers, train or TrainSection(batch_size=real.shape[0]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        run_step(step, real, classes)
        sync(device)  # the step's kernels are done
        times.append(time.perf_counter() - start)
    return times[warmup:]
