"""Process-group set-up for ``torchrun`` + DistributedDataParallel (NCCL on GPUs, gloo on CPUs), and batch
norm over the global batch of all processes."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

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
    """Join the process group that ``torchrun`` describes in the environment, if any.

    The group lives until the process exits, so that several runs in one process (``train grid``) share
    it: destroying and re-creating a gloo group under ``torchrun`` can fail to connect.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
    return env


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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


def max_replica_divergence(module: nn.Module) -> float:
    """Largest difference between ranks of a checksum of each parameter and batch-norm running statistic;
    0 when the replicas are in sync."""
    stats = [b for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
             for b in (m.running_mean, m.running_var)]
    checksum = torch.stack([t.detach().double().sum() for t in [*module.parameters(), *stats]]).cpu()
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return max(float((g - checksum).abs().max()) for g in gathered)


def synchronize_batch_norm(net: nn.Module, device: torch.device) -> nn.Module:
    """Make the batch norm layers of ``net`` normalise with the statistics of the global batch (all processes).

    The layers are replaced in place and keep their parameters and buffers (optimisers still hold them;
    state-dict keys do not change). On CUDA: torch's SyncBatchNorm. On the CPU, torch's SyncBatchNorm
    refuses the input (its kernels are CUDA-only), so `GlobalBatchNorm` computes the same statistics from
    all-reduced sums. Either way the running statistics are updated identically on every replica.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if isinstance(net, _BatchNorm) and not isinstance(net, GlobalBatchNorm):
        return GlobalBatchNorm.replacing(net)
    for name, child in net.named_children():
        net.add_module(name, synchronize_batch_norm(child, device))
    return net


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: each process's output is the sum."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(_BatchNorm):
    """Batch norm over the batches of all processes, for CPU tensors (what SyncBatchNorm does on GPUs).

    In training mode under torch.distributed, the per-channel mean and (biased) variance are those of the
    global batch, from all-reduced sums (two passes, for a stable variance) that gradients flow through;
    the running statistics take the global mean and unbiased variance. Otherwise it is plain batch norm.
    """

    @classmethod
    def replacing(cls, norm: _BatchNorm) -> "GlobalBatchNorm":
        new = cls(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        if norm.affine:
            new.weight, new.bias = norm.weight, norm.bias
        new.running_mean, new.running_var = norm.running_mean, norm.running_var
        new.num_batches_tracked = norm.num_batches_tracked
        return new.train(norm.training)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims, shape = [0, *range(2, x.dim())], (1, -1) + (1,) * (x.dim() - 2)
        count = x.new_full((1,), x.numel() // x.shape[1])
        sums = _SumOverProcesses.apply(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        var = _SumOverProcesses.apply((x - mean.view(shape)).square().sum(dims)) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * (n / (n - 1)).detach())
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)
