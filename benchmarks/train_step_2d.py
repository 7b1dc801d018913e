"""Training speed and peak memory of the 2D generators (StyleGAN2 variants, FastGAN, DCGAN 2D and WGAN 2D)
at 64x64 and 256x256.

Per model and size: median seconds per training step (the trainer's own step: every phase due at that
step, then the EMA; the median is a step without lazy regularisation), mean seconds per step over a whole
lazy-regularisation cycle (16 steps: R1 once, path length 4 times), and peak memory. A model's parameters come from the preset
``configs/<label>_<size>.yaml`` where one exists (``stylegan2_b_64``, ``stylegan2_c_256``, ...), else from
its registered defaults. Every configuration runs in a fresh process so that the peak memory (max
allocated on CUDA, max RSS on the CPU, imports included) is its own. Synthetic tensors, one grayscale
channel and 2 labels; bf16 autocast on CUDA as in the trainer.

    python benchmarks/train_step_2d.py                          # CUDA if present, else CPU; 64 and 256
    python benchmarks/train_step_2d.py --sizes 64 --steps 16    # CPU-friendly
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from step_timing import peak_mib, time_training_steps

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# (label, registered model name, parameters that pick a variant)
CANDIDATES = [
    ("stylegan2_b", "stylegan2", {"variant": "B-SG"}),
    ("stylegan2_m", "stylegan2", {"variant": "M-SG"}),
    ("stylegan2_c", "stylegan2", {"variant": "C-SG"}),
    ("fastgan", "fastgan", {}),
    ("dcgan2d", "dcgan2d", {}),
    ("wgan2d", "wgan2d", {}),
]
WARMUP_STEPS = 2


def preset_params(label: str, size: int) -> tuple[dict, str]:
    path = CONFIGS / f"{label}_{size}.yaml"
    if not path.is_file():
        return {}, "defaults"
    return yaml.safe_load(path.read_text())["model"].get("params", {}), path.name


def measure(label: str, name: str, params: dict, size: int, batch: int, steps: int, device: str) -> dict:
    from synthmed.models.registry import DataInfo, build_model

    torch.manual_seed(0)
    dev = torch.device(device)
    preset, source = preset_params(label, size)
    model = build_model(name, {**preset, **params}, DataInfo((size, size), 1, 2)).to(dev)
    optimizers = {k: torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.0, 0.99)) for k, net in model.nets.items()}
    real = model.codec.encode(torch.rand(batch, 1, size, size) * 2 - 1, torch.randint(0, 2, (batch, size, size)))
    real = real.to(dev)
    times = time_training_steps(model, optimizers, real, warmup=WARMUP_STEPS, steps=steps)
    peak_mb = peak_mib(dev)
    return {"model": label, "size": size, "batch": batch, "device": device, "params_from": source,
            "parameters_m": sum(p.numel() for p in model.nets.parameters()) / 1e6,
            "median_sec_per_step": statistics.median(times), "mean_sec_per_step": statistics.fmean(times),
            "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16, help="timed steps after 2 warm-up steps (16 = one R1 cycle)")
    parser.add_argument("--models", nargs="+", help="labels to run (default: all)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        label, name, params, size = json.loads(args.one)
        print(json.dumps(measure(label, name, params, size, args.batch, args.steps, args.device)))
        return
    candidates = [c for c in CANDIDATES if not args.models or c[0] in args.models]
    print(f"{'model':13s}{'size':>5s}{'batch':>6s}{'M params':>9s}{'s/step med':>11s}{'s/step mean':>12s}"
          f"{'peak MB':>9s}  device, params from")
    for size in args.sizes:
        for label, name, params in candidates:
            cmd = [sys.executable, __file__, "--one", json.dumps([label, name, params, size]), "--device", args.device,
                   "--batch", str(args.batch), "--steps", str(args.steps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{label:13s}{size:>5d}  failed: {done.stderr.strip().splitlines()[-1]}", flush=True)
                continue
            r = json.loads(done.stdout.splitlines()[-1])
            print(f"{r['model']:13s}{r['size']:>5d}{r['batch']:>6d}{r['parameters_m']:>9.2f}"
                  f"{r['median_sec_per_step']:>11.3f}{r['mean_sec_per_step']:>12.3f}{r['peak_mb']:>9.0f}"
                  f"  {r['device']}, {r['params_from']}", flush=True)


if __name__ == "__main__":
    main()
