"""``synthmed demo``: the main job end to end on the bundled MSD Hippocampus subset.

prepare (percentile-mapped MRI, 1.5 mm, 32^3) -> train a 3D DCGAN on the train split -> sample
synthetic pairs -> a montage of real vs synthetic slices with mask overlays and a printed summary.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from synthmed.data.bundled import sample_dataset_path
from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import make_options, prepare_dataset
from synthmed.errors import UserError
from synthmed.fileio import check_output_folder, write_output_marker
from synthmed.sample.montage import save_montage
from synthmed.sample.sampler import sample_arrays, sample_to_folder
from synthmed.train.config import resolve_config
from synthmed.train.loop import train

DEMO_STEPS = 600
DEMO_SAMPLES = 16
MONTAGE = "montage.png"


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


def demo_config(manifest: Path, run_dir: Path, steps: int, seed: int) -> dict:
    """A small 3D DCGAN that learns the hippocampus pairs in minutes on two CPU cores."""
    return {
        "model": {"name": "dcgan3d", "params": {"latent_dim": 64, "base_channels": 16, "max_channels": 128,
                                                 "pairing": {"layout": "channel", "mask_encoding": "onehot"}}},
        "data": {"manifest": str(manifest), "split": "train"},
        "optim": {"G": {"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
                  "D": {"type": "adam", "lr": 1e-4, "betas": [0.5, 0.999]}},
        "train": {"steps": steps, "batch_size": 8, "seed": seed, "ema_kimg": 0.2, "log_every": 20,
                  "checkpoint_every": steps},
        "out": str(run_dir),
    }


def mask_statistics(masks: np.ndarray, labels: list[int]) -> dict[int, float]:
    """Mean voxel count per label over a set of masks."""
    return {label: float((masks == label).sum(axis=tuple(range(1, masks.ndim))).mean()) for label in labels}


def run_demo(out: Path, steps: int | None = None, seed: int = 0) -> None:
    steps = steps or DEMO_STEPS
    started = time.perf_counter()
    prepared, run_dir, synthetic = out / "prepared", out / "run", out / "synthetic"
    replace_demo_folder(out, [prepared.name, run_dir.name, synthetic.name, MONTAGE])

    print(f"[1/4] prepare: bundled MSD Task04 Hippocampus subset -> {prepared}")
    options = make_options(intensity="percentile", spacing=(1.5, 1.5, 1.5), shape=(32, 32, 32),
                           test_fraction=0.2, val_fraction=0.1, folds=3, seed=seed)
    prepare_dataset([sample_dataset_path()], prepared, options)
    manifest = load_manifest(prepared)

    print(f"[2/4] train: 3D DCGAN, {steps} steps on the {len(manifest.split_ids('train'))} train cases -> {run_dir}")
    config = resolve_config(demo_config(prepared, run_dir, steps, seed), source="demo")
    train(config)

    print(f"[3/4] sample: {DEMO_SAMPLES} synthetic pairs -> {synthetic}")
    sample_to_folder(run_dir, DEMO_SAMPLES, synthetic, seed=seed)

    print("[4/4] montage and summary")
    real_images, real_masks = load_arrays(manifest, manifest.split_ids("train"))
    syn_images, syn_masks = sample_arrays(run_dir, DEMO_SAMPLES, seed=seed)
    labels = {str(k): v for k, v in manifest.labels.items()}
    montage = save_montage(out / MONTAGE, [("real (train)", real_images, real_masks),
                                                 ("synthetic", syn_images, syn_masks)], labels=labels)
    _print_summary(manifest, real_images, real_masks, syn_images, syn_masks)
    print(f"\nOutputs in {out.resolve()}:")
    for name, path in [("prepared data + manifest", prepared / "manifest.json"), ("training run", run_dir),
                       ("loss curves", run_dir / "plots" / "losses.png"), ("synthetic NIfTI + card", synthetic),
                       ("montage (real vs synthetic)", montage)]:
        print(f"  {name:28s} {path}")
    print(f"Done in {time.perf_counter() - started:.0f} s.")


def _print_summary(manifest, real_images, real_masks, syn_images, syn_masks) -> None:
    fg_labels = [k for k in sorted(manifest.labels) if k != 0]
    real_vol, syn_vol = mask_statistics(real_masks, fg_labels), mask_statistics(syn_masks, fg_labels)
    print(f"\n{'':28s}{'real train':>12s}{'synthetic':>12s}")
    print(f"{'cases':28s}{len(real_masks):12d}{len(syn_masks):12d}")
    for label in fg_labels:
        name = f"mean voxels '{manifest.labels[label]}'"
        print(f"{name:28s}{real_vol[label]:12.0f}{syn_vol[label]:12.0f}")
    for title, images, masks in [("real", real_images, real_masks), ("synthetic", syn_images, syn_masks)]:
        inside = images[:, 0][masks > 0]
        print(f"{'mean intensity in mask (' + title + ')':40s}{(inside.mean() if inside.size else float('nan')):+.3f}")
