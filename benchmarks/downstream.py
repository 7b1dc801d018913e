"""Wall time of downstream segmentation training per arm and epoch, at 16³ and 32³ on the CPU.

    .venv/bin/python benchmarks/downstream.py [--epochs 4] [--sizes 16 32] [--models tiny small]

Arms differ by how many cases one epoch sees (real only: R, real + n synthetic: R + n) and by
augmentation; an epoch's cost is what a benchmark plan multiplies by epochs x folds x seeds.
Prints the median seconds per epoch (first epoch dropped as warm-up) and per training case.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from synthmed.downstream.config import AugmentationSection, TrainSection
from synthmed.downstream.data import CaseArrays
from synthmed.downstream.trainer import SegTrainer
from synthmed.data.toy import toy_case


class TimedTrainer(SegTrainer):
    def on_epoch_start(self) -> None:
        super().on_epoch_start()
        self._t0 = time.perf_counter()

    def on_epoch_end(self, record) -> None:
        self.epoch_seconds = getattr(self, "epoch_seconds", []) + [time.perf_counter() - self._t0]
        super().on_epoch_end(record)


def toy_cases(n: int, size: int, seed: int) -> CaseArrays:
    rng = np.random.default_rng(seed)
    pairs = [toy_case((size,) * 3, rng.uniform(0.25, 0.4), rng) for _ in range(n)]
    images = np.clip((np.stack([p[0] for p in pairs])[:, None] + 300) / 700, -1, 1).astype(np.float32)
    return CaseArrays(images, np.stack([p[1] for p in pairs]).astype(np.int64), [str(i) for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--models", nargs="+", default=["tiny", "small"])
    ap.add_argument("--real", type=int, default=8, help="real training cases")
    ap.add_argument("--synthetic", type=int, default=8, help="synthetic cases added in the real+synthetic arm")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'size':>5} {'model':>6} {'arm':<26} {'cases':>5} {'s/epoch':>8} {'ms/case':>8}")
    for size in args.sizes:
        real, syn, val = toy_cases(args.real, size, 0), toy_cases(args.synthetic, size, 1), toy_cases(2, size, 2)
        for model in args.models:
            settings = TrainSection(epochs=args.epochs, batch_size=2, model_size=model, device="cpu", progress=False,
                                    select="last")
            arms = {"real": (real, None), "real+synthetic": (CaseArrays.concat([real, syn]), None),
                    "real aug": (real, AugmentationSection()),
                    "real+synthetic aug": (CaseArrays.concat([real, syn]), AugmentationSection())}
            for name, (data, aug) in arms.items():
                trainer = TimedTrainer(data, val, 3, settings, seed=0, augmentation=aug)
                trainer.run_training()
                median = float(np.median(trainer.epoch_seconds[1:] or trainer.epoch_seconds))
                print(f"{size:>5} {model:>6} {name:<26} {len(data):>5} {median:>8.2f} {1000 * median / len(data):>8.0f}",
                      flush=True)


if __name__ == "__main__":
    main()
