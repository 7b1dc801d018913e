"""Time to extract features of N volumes per feature space on the CPU (median of repeats), and the
extraction time that gives for --target-n volumes (the autoencoder's fit counted once).

    python benchmarks/evaluate.py [--n 16] [--shape 32 48 32] [--repeats 3] [--workers CORES] [--target-n 500]

Inception and MedicalNet run with random weights here (same cost as the real ones), so no download is needed.
Radiomics runs in --workers processes (default: the CPU cores, as `synthmed evaluate`); the first
repeat pays for starting them.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from synthmed.metrics.distances import frechet_distance, kernel_inception_distance
from synthmed.metrics.extractors import build_feature_extractor, extract_features
from synthmed.metrics.extractors.autoencoder import AE_STEPS
from synthmed.metrics.extractors.radiomics import default_workers

SPACES = {"radiomics": {}, "autoencoder": {"steps": AE_STEPS}, "medicalnet": {"pretrained": False}, "inception": {"pretrained": False}}


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (reaped) children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="volumes")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 48, 32))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spaces", nargs="+", default=list(SPACES))
    parser.add_argument("--workers", type=int, default=default_workers(), help="radiomics worker processes")
    parser.add_argument("--target-n", type=int, default=500, help="volumes to extrapolate the total to")
    parser.add_argument("--ae-steps", type=int, default=AE_STEPS, help="autoencoder fit steps (evaluate's default)")
    args = parser.parse_args()
    SPACES["radiomics"] = {"workers": args.workers}
    SPACES["autoencoder"] = {"steps": args.ae_steps}
    images = np.random.default_rng(0).uniform(-1, 1, (args.n, 1, *args.shape)).astype(np.float32)
    print(f"{args.n} volumes of {args.shape}, {torch.get_num_threads()} threads, {args.workers} radiomics workers, "
          f"median of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    total = idle = 0.0
    for name in args.spaces:
        extractor = build_feature_extractor(name, **SPACES[name])
        if extractor.needs_fit:
            start, cpu = time.perf_counter(), cpu_seconds()
            extractor.fit(images)
            fit, fit_cpu = time.perf_counter() - start, cpu_seconds() - cpu
            total, idle = total + fit, idle + fit_cpu
            print(f"  {name:12} fit {SPACES[name].get('steps')} steps: {fit:.2f} s ({fit_cpu:.1f} CPU s)")
        times, cpu = [], cpu_seconds()
        for _ in range(args.repeats):
            start = time.perf_counter()
            views = extract_features(extractor, images)
            times.append(time.perf_counter() - start)
        if getattr(extractor, "_pool", None) is not None:
            extractor._pool.shutdown()  # reaped workers: their CPU time is counted
        cpu_per_volume = (cpu_seconds() - cpu) / (args.repeats * args.n)
        med = float(np.median(times))
        dims = next(iter(views.values())).shape[1]
        parallel = getattr(extractor, "workers", 1)
        total, idle = total + med / args.n * args.target_n, idle + cpu_per_volume * args.target_n / parallel
        print(f"  {name:12} extract: {med:.2f} s ({med / args.n * 1000:.0f} ms/volume), {cpu_per_volume * 1000:.0f} CPU ms/volume, "
              f"{len(views)} view(s) x {dims} features (all repeats: {', '.join(f'{t:.2f}' for t in times)} s)")
    print(f"  {' + '.join(args.spaces)} for {args.target_n} volumes: {total / 60:.1f} min measured here (fit once + median "
          f"wall/volume x {args.target_n}); {idle / 60:.1f} min on idle cores (CPU seconds / {args.workers} workers)")
    feats = np.random.default_rng(1).normal(size=(args.n, 2048))
    start = time.perf_counter()
    frechet_distance(feats, feats + 0.1)
    kernel_inception_distance(feats, feats)
    print(f"  Fréchet + KID on [{args.n}, 2048]: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
