"""``synthmed demo``: the tiny study on the bundled MSD Hippocampus subset, with its HTML report.

prepare (16^3) -> for each of 3 seeds: 8 real training cases -> train a small 3D DCGAN on exactly those
cases -> sample 16 pairs -> evaluate them -> downstream segmentation (real, real + synthetic, each with
and without augmentation, scored on 10 real test cases) -> aggregate -> report. The same work as
``synthmed study --config configs/study_tiny.yaml`` (a test keeps the two equal); ends by printing the
report's path and one verdict line per arm.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import yaml

from synthmed.errors import UserError
from synthmed.fileio import check_output_folder, write_output_marker
from synthmed.study.run import check_inputs, open_study, print_answer, run_jobs, run_worker

GENERATOR_FILE = "dcgan3d_16.yaml"
STUDY_FILE = "demo_study.yaml"
STUDY_FOLDER = "study"
# configs/dcgan3d_32.yaml with the --set overrides of configs/study_tiny.yaml applied (the package ships no configs/)
DEMO_GENERATOR = {
    "model": {"name": "dcgan3d", "params": {"latent_dim": 32, "base_channels": 8, "max_channels": 32,
                                             "pairing": {"layout": "channel", "mask_encoding": "onehot"}}},
    "data": {"manifest": "prepared", "split": "train"},
    "optim": {"G": {"type": "adam", "lr": 2.0e-4, "betas": [0.5, 0.999]},
              "D": {"type": "adam", "lr": 1.0e-4, "betas": [0.5, 0.999]}},
    "train": {"steps": 2000, "batch_size": 8, "ema_kimg": 0.5, "log_every": 10, "checkpoint_every": 500},
    "out": "runs/dcgan3d_16",
}


def demo_study(generator_preset: Path, steps: int | None, seed: int) -> dict:
    """The study of configs/study_tiny.yaml, with the generator preset written next to it."""
    tiny = {
        "name": "tiny",
        "data": {"raw": ["bundled"],
                 "prepare": {"intensity": "percentile", "spacing": [1.5, 1.5, 1.5], "shape": [16, 16, 16],
                             "shape_mode": "resize", "test_fraction": 0.25, "val_fraction": 0.15, "folds": 0}},
        "protocol": "fixed_validation",
        "real_sizes": [8],
        "seeds": [seed, seed + 1, seed + 2],
        "generators": {"dcgan": {"preset": str(generator_preset), "steps": steps or DEMO_STEPS}},
        "n_samples": 16,
        "evaluation": {"features": ["radiomics"], "bootstrap": 20},
        "downstream": {"arms": ["real", "real+synthetic"], "n_synthetic": [16], "with_augmentation": [False, True],
                       "train": {"epochs": 10, "batch_size": 4, "model_size": "tiny"}, "stats": {"bootstrap": 1000}},
        "out": "runs/study_tiny",
    }
    return tiny


DEMO_STEPS = 300
DEMO_WORKERS = 2  # local worker processes (one per core of a 2-core machine)


def replace_demo_folder(out: Path, entries: list[str]) -> None:
    """Empty `out` for a new demo: only a folder an earlier demo wrote is replaced, never anything else.

    Raises:
        UserError: `out` exists but is not an earlier demo's folder, or cannot be written.
    """
    check_output_folder(out, kind="demo", overwrite=True)
    try:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        write_output_marker(out, "demo", entries)  # written first: an interrupted demo is replaced too
    except OSError as e:
        raise UserError(f"{out}: cannot write the demo folder ({e.strerror or e}); choose another --out") from None


def run_demo(out: Path, steps: int | None = None, seed: int = 0) -> Path:
    """Run the tiny study in ``out/study`` with up to two local workers; returns the report's path."""
    started = time.perf_counter()
    replace_demo_folder(out, [STUDY_FOLDER, STUDY_FILE, GENERATOR_FILE])
    (out / GENERATOR_FILE).write_text(yaml.safe_dump(DEMO_GENERATOR, sort_keys=False))
    study_yaml = out / STUDY_FILE
    study_yaml.write_text(yaml.safe_dump(demo_study((out / GENERATOR_FILE).resolve(), steps, seed), sort_keys=False))
    study = open_study(study_yaml, str(out / STUDY_FOLDER), write=False)
    check_inputs(study)
    study = open_study(study_yaml, str(out / STUDY_FOLDER))
    jobs = min(DEMO_WORKERS, os.cpu_count() or 1)
    print(f"The tiny study: {len(study.units)} work units in {study.folder} (bundled MSD Hippocampus subset, 16^3).\n"
          "Each seed draws 8 real training cases; a 3D DCGAN trains on exactly those, and every segmentation arm\n"
          "trains on the same 8 (plus 16 synthetic pairs for real + synthetic); all are scored on 10 real test cases.\n"
          f"{jobs} worker process(es) share the units (synthmed study --jobs {jobs}).")
    if jobs > 1:
        run_jobs(study_yaml, study, jobs, [])
    else:
        run_worker(study)
    print_answer(study)
    print("The numbers show the machinery on tiny data, not an answer: see configs/study_hippocampus_small.yaml.")
    print(f"Done in {time.perf_counter() - started:.0f} s.")
    return study.folder / "report.html"
