"""What the training benchmarks share: timing the model's phases the way the trainer runs them, and peak memory."""

from __future__ import annotations

import contextlib
import resource
import time

import torch


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


def time_training_steps(model, optimizers: dict, real: torch.Tensor, device: torch.device, warmup: int,
                        steps: int, ema_beta: float | None = None) -> list[float]:
    """Seconds of each of `steps` training steps after `warmup` untimed ones: every phase due at the step
    (as `synthmed.train.loop.Trainer.train_step` schedules them), then the EMA update when `ema_beta` is given."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        for phase in model.phases():
            if step % phase.interval:
                continue
            optimizers[phase.optimizer].zero_grad(set_to_none=True)
            with autocast_for(device):
                model.accumulate_gradients(phase.name, real)
            optimizers[phase.optimizer].step()
            model.after_optimizer_step(phase.name)
        if ema_beta is not None:
            model.update_ema(ema_beta)
        sync(device)  # the step's kernels are done
        times.append(time.perf_counter() - start)
    return times[warmup:]
