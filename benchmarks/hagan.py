"""HA-GAN speed and memory: training step time, peak memory per preset (batch 4) and sampling time per volume.

    python benchmarks/hagan.py                      # CPU: the small presets (32, 64)
    python benchmarks/hagan.py --presets 128 256    # on a CUDA machine (bf16 autocast)
    python benchmarks/hagan.py --compile            # torch.compile the networks

Prints medians over ``--repeats`` timed steps after ``--warmup`` steps, on random data (speed does not
depend on the data). Peak memory is CUDA's max allocated memory, or the process's peak RSS on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from step_timing import autocast_for, peak_mib, sync, time_training_steps

from synthmed.models.registry import DataInfo, build_model
from synthmed.config import read_yaml
from synthmed.train.config import OptimizerSection
from synthmed.train.loop import make_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def bench_preset(preset: str, device: torch.device, batch: int, warmup: int, repeats: int, compile_: bool) -> dict:
    raw = read_yaml(CONFIGS / f"hagan_{preset}.yaml")
    side = int(preset.split("_")[0])
    model = build_model("hagan", raw["model"]["params"], DataInfo((side, side, side), 1, 3)).to(device)
    optimizers = {k: make_optimizer(OptimizerSection(**raw["optim"][k]), model.nets[k].parameters()) for k in model.nets}
    if compile_:
        model.wrap(torch.compile)
    image = torch.rand(batch, 1, side, side, side) * 2 - 1
    mask = torch.randint(0, 3, (batch, side, side, side))
    real = model.codec.encode(image, mask).to(device)
    times = time_training_steps(model, optimizers, real, warmup=warmup, steps=repeats)
    peak = peak_mib(device)
    sample_times = []
    for seed in range(max(2, repeats // 2)):
        sync(device)
        start = time.perf_counter()
        with autocast_for(device):
            model.sample(1, seed=seed)
        sync(device)
        sample_times.append(time.perf_counter() - start)
    return {"preset": preset, "step_s": statistics.median(times), "peak_mib": peak,
            "sample_s_per_volume": statistics.median(sample_times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--presets", nargs="+", default=["32", "64", "128", "256"] if cuda else ["32", "64"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    print(f"device {device} ({torch.cuda.get_device_name() if cuda else f'{torch.get_num_threads()} threads'}), "
          f"batch {args.batch}, torch {torch.__version__}, compile {args.compile}")
    print(f"{'preset':>8} {'step (s)':>10} {'peak (MiB)':>11} {'sample (s/vol)':>15}")
    for preset in args.presets:
        torch.manual_seed(0)
        r = bench_preset(preset, device, args.batch, args.warmup, args.repeats, args.compile)
        print(f"{r['preset']:>8} {r['step_s']:>10.3f} {r['peak_mib']:>11.0f} {r['sample_s_per_volume']:>15.3f}", flush=True)
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
