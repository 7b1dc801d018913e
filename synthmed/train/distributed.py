"""Process-group set-up for ``torchrun`` + DistributedDataParallel (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from synthmed.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return env


def select_device(requested: str, env: DistEnv = DistEnv()) -> torch.device:
    """The device of the ``train.device`` setting (train and downstream): "auto", "cpu" or "cuda".

    ``auto`` means CUDA where present, else the CPU; one GPU per local rank (GPU 0 outside ``torchrun``).

    Raises:
        UserError: "cuda" requested on a machine without a CUDA device.
    """
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("train.device: 'cuda' requested but no CUDA device is available (use cpu or auto)")
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def shutdown_distributed(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def max_parameter_divergence(module: torch.nn.Module) -> float:
    """Largest difference between ranks of a parameter checksum; 0 when replicas are in sync."""
    checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).cpu()
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return max(float((g - checksum).abs().max()) for g in gathered)
