"""Training speed, peak memory and sampling speed of the diffusion presets.

Per preset (``configs/diffusion_*.yaml``): median seconds per training step (the trainer's own
`synthmed.train.loop.TrainStep`: the denoising phase and the EMA; bf16 autocast on CUDA) at the preset's
batch size, peak memory (max allocated on CUDA, max RSS on the CPU, imports included), and seconds per
sampled volume at 10, 25 and 50 steps for each sampler: ``ddpm`` and ``ddim`` with the preset's
network trained with DDPM, ``rflow`` with the same network trained as rectified flow (the cost of a step does not depend
on the weights, so untrained networks are timed). Every preset runs in a fresh process so that its peak
memory is its own. Synthetic tensors: one image channel, 3 labels in 3D (hippocampus), 2 in 2D.

    python benchmarks/diffusion.py                                    # CPU presets on the CPU
    python benchmarks/diffusion.py --presets diffusion_64 diffusion_2d_256 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from step_timing import peak_mib, sync, time_training_steps

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPES = {  # the data each preset is sized for
    "diffusion_joint_32": (32, 32, 32), "diffusion_maskcond_32": (32, 32, 32), "diffusion_2d_64": (64, 64),
    "diffusion_64": (64, 64, 64), "diffusion_2d_256": (256, 256),
}
CPU_PRESETS = ["diffusion_joint_32", "diffusion_maskcond_32", "diffusion_2d_64"]
SAMPLING_STEPS = (10, 25, 50)


def build(preset: str, device: torch.device, **overrides):
    from synthmed.models.registry import DataInfo, build_model

    config = yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text())
    shape = SHAPES[preset]
    torch.manual_seed(0)
    model = build_model("diffusion", {**config["model"]["params"], **overrides}, DataInfo(shape, 1, 3 if len(shape) == 3 else 2))
    return model.to(device), config


def sampling_seconds(model, n: int, sampler: str, steps: int) -> float:
    """Seconds per sample of ``n`` samples in one batch (one untimed warm-up batch of 1 first)."""
    masks = torch.randint(0, model.codec.num_labels, (n, *model.shape)) if model.capabilities.mask_conditional else None
    model.sample(1, seed=0, masks=None if masks is None else masks[:1], sampler=sampler, steps=2)
    sync(next(model.parameters()).device)
    start = time.perf_counter()
    model.sample(n, seed=0, batch_size=n, masks=masks, sampler=sampler, steps=steps)
    sync(next(model.parameters()).device)
    return (time.perf_counter() - start) / n


def measure(preset: str, device_name: str, steps: int, sample_n: int) -> dict:
    from synthmed.train.config import TrainSection

    device = torch.device(device_name)
    model, config = build(preset, device)
    batch = config["train"]["batch_size"]
    opt = config["optim"]["unet"]
    optimizers = {"unet": torch.optim.Adam(model.nets["unet"].parameters(), lr=opt["lr"], betas=tuple(opt["betas"]))}
    real = model.codec.encode(torch.rand(batch, 1, *model.shape) * 2 - 1,
                              torch.randint(0, model.codec.num_labels, (batch, *model.shape))).to(device)
    train = TrainSection(batch_size=batch, ema_kimg=config["train"]["ema_kimg"])
    times = time_training_steps(model, optimizers, real, warmup=2, steps=steps, train=train)
    result = {"preset": preset, "shape": list(model.shape), "batch": batch, "device": device_name,
              "parameters_m": sum(p.numel() for p in model.nets.parameters()) / 1e6,
              "sec_per_step": statistics.median(times), "peak_mb": peak_mib(device), "sampling": {}}
    # each sampler with the network of the training it samples (the preset's own, or its twin)
    ddpm, _ = build(preset, device, scheduler="ddpm", sampler=None)
    flow, _ = build(preset, device, scheduler="rflow", prediction=None, sampler=None)
    for sampler, net in (("ddpm", ddpm), ("ddim", ddpm), ("rflow", flow)):
        for n_steps in SAMPLING_STEPS:
            result["sampling"][f"{sampler}_{n_steps}"] = sampling_seconds(net, sample_n, sampler, n_steps)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=CPU_PRESETS, choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=5, help="timed training steps after 2 warm-up steps")
    parser.add_argument("--sample-n", type=int, default=2, help="samples per timed sampling batch")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one preset, print JSON
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.steps, args.sample_n)))
        return
    columns = [f"{s}_{n}" for s in ("ddpm", "ddim", "rflow") for n in SAMPLING_STEPS]
    print(f"{'preset':22s}{'batch':>6s}{'M params':>9s}{'s/step':>8s}{'peak MB':>9s}  s/sample: "
          + " ".join(f"{c:>9s}" for c in columns))
    for preset in args.presets:
        cmd = [sys.executable, __file__, "--one", preset, "--device", args.device, "--steps", str(args.steps),
               "--sample-n", str(args.sample_n)] + (["--threads", str(args.threads)] if args.threads else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"{preset:22s} failed: {done.stderr.strip().splitlines()[-1]}", flush=True)
            continue
        r = json.loads(done.stdout.splitlines()[-1])
        print(f"{r['preset']:22s}{r['batch']:>6d}{r['parameters_m']:>9.2f}{r['sec_per_step']:>8.2f}{r['peak_mb']:>9.0f}"
              f"  {r['device']:>9s} " + " ".join(f"{r['sampling'][c]:>9.2f}" for c in columns), flush=True)


if __name__ == "__main__":
    main()
