"""Training speed and peak memory of the 3D baselines.

Prints, per model and size: median seconds per training step (the trainer's own step: one D update, a G
update and the EMA on the steps the model schedules one), steps/s and peak memory. Each configuration runs in a fresh process so
that peak memory (max RSS on the CPU, max allocated on CUDA) belongs to it alone.

    python benchmarks/train_step.py                 # CPU: 32^3 and 64^3
    python benchmarks/train_step.py --device cuda   # on a GPU, bf16 autocast
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch
from step_timing import peak_mib, time_training_steps

CONFIGS = [
    ("dcgan3d", {}),
    ("wgan3d", {"constraint": "gp"}),
    ("wgan3d", {"constraint": "clip", "d_norm": "batch"}),
]
PARAMS = {"latent_dim": 128, "base_channels": 16, "max_channels": 128}


def measure(name: str, params: dict, size: int, batch: int, steps: int, device: str) -> dict:
    from synthmed.models.registry import DataInfo, build_model

    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(name, {**PARAMS, **params}, DataInfo((size,) * 3, 1, 3)).to(dev)
    optimizers = {k: torch.optim.Adam(net.parameters(), lr=1e-4) for k, net in model.nets.items()}
    real = model.codec.encode(torch.rand(batch, 1, size, size, size) * 2 - 1,
                              torch.randint(0, 3, (batch, size, size, size))).to(dev)
    times = time_training_steps(model, optimizers, real, warmup=3, steps=steps)
    peak_mb = peak_mib(dev)
    median = statistics.median(times)
    return {"model": name + ("-" + params["constraint"] if "constraint" in params else ""), "size": size,
            "batch": batch, "device": device, "sec_per_step": median, "steps_per_sec": 1 / median, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    if args.one:
        name, params, size = json.loads(args.one)
        print(json.dumps(measure(name, params, size, args.batch, args.steps, args.device)))
        return
    print(f"{'model':14s}{'size':>6s}{'batch':>7s}{'s/step':>9s}{'steps/s':>9s}{'peak MB':>9s}  device")
    for size in args.sizes:
        for name, params in CONFIGS:
            cmd = [sys.executable, __file__, "--one", json.dumps([name, params, size]), "--device", args.device,
                   "--batch", str(args.batch), "--steps", str(args.steps)]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            print(f"{r['model']:14s}{r['size']:>6d}{r['batch']:>7d}{r['sec_per_step']:>9.3f}{r['steps_per_sec']:>9.2f}"
                  f"{r['peak_mb']:>9.0f}  {r['device']}", flush=True)


if __name__ == "__main__":
    main()
