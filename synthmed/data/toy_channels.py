"""A tiny multi-channel NIfTI dataset (BraTS / MSD Task01-like), for tests and for trying the tool.

Each case is the toy sphere of `synthmed.data.toy` seen by C "modalities": channel c shows the
sphere and its core with its own contrast and scale (channel 0 CT-like in HU when named ``CT``,
the others MRI-like with a per-case scale), all on one geometry with the mask.

Layouts (what `synthmed prepare` accepts for several channels):
- ``"nnunet"``: ``imagesTr/<id>_0000.nii.gz … <id>_000N.nii.gz``, ``labelsTr/<id>.nii.gz`` and
  ``dataset.json`` with ``channel_names`` (nnU-Net v2);
- ``"msd4d"``: ``imagesTr/<id>.nii.gz`` as one 4D NIfTI with the channels on the last axis, and
  ``dataset.json`` with ``modality`` (MSD Task01 BrainTumour);
- ``"datalist"``: ``datalist.json`` whose ``image`` is a list of one file per channel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from synthmed.data.toy import TOY_LABELS, toy_case
from synthmed.errors import UserError

CHANNEL_LAYOUTS = ("nnunet", "msd4d", "datalist")
BRATS_NAMES = ("FLAIR", "T1w", "t1gd", "T2w")  # MSD Task01's modality names


def toy_channels(mask: np.ndarray, names: list[str], rng: np.random.Generator) -> np.ndarray:
    """[C,D,H,W] float32: per channel, the levels of background/sphere/core in its own contrast."""
    out = []
    for c, name in enumerate(names):
        if name.upper() == "CT":
            levels, noise = np.array([-800.0, 200.0, 400.0]), 20.0
        else:  # each MRI-like channel its own contrast order and a per-case scale
            base = np.roll(np.array([50.0, 400.0, 700.0]), c)
            levels, noise = base * rng.uniform(0.5, 2.0), 10.0
        out.append(levels[mask] + rng.normal(0.0, noise, size=mask.shape))
    return np.stack(out).astype(np.float32)


def write_toy_channels(
    root: str | os.PathLike,
    names: list[str] | tuple[str, ...] = BRATS_NAMES[:2],
    layout: str = "nnunet",
    n_cases: int = 8,
    shape: tuple[int, int, int] = (16, 16, 16),
    seed: int = 0,
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
) -> Path:
    """Write `n_cases` toy cases with one channel per name in `names` under `root`; return the path to
    give `prepare` (the folder, or the datalist JSON file).

    Raises:
        UserError: an unknown layout.
    """
    if layout not in CHANNEL_LAYOUTS:
        raise UserError(f"unknown toy layout {layout!r}; valid layouts: {', '.join(CHANNEL_LAYOUTS)}")
    root, names = Path(root), list(names)
    rng = np.random.default_rng(seed)
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [-s * (n - 1) / 2 for s, n in zip(spacing, shape)]
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n_cases):
        case_id = f"mc_{i:03d}"
        _, mask = toy_case(tuple(shape), rng.uniform(0.25, 0.40), rng)
        image = toy_channels(mask, names, rng)
        nib.save(nib.Nifti1Image(mask, affine), root / "labelsTr" / f"{case_id}.nii.gz")
        if layout == "msd4d":
            nib.save(nib.Nifti1Image(np.moveaxis(image, 0, -1), affine), root / "imagesTr" / f"{case_id}.nii.gz")
            continue
        files = [f"imagesTr/{case_id}_{c:04d}.nii.gz" for c in range(len(names))]
        for f, channel in zip(files, image):
            nib.save(nib.Nifti1Image(channel, affine), root / f)
        entries.append({"image": files, "label": f"labelsTr/{case_id}.nii.gz", "id": case_id})
    if layout == "datalist":
        path = root / "datalist.json"
        channel_names = {str(c): n for c, n in enumerate(names)}
        path.write_text(json.dumps({"labels": TOY_LABELS, "channel_names": channel_names, "training": entries}, indent=2))
        return path
    key = "channel_names" if layout == "nnunet" else "modality"
    meta = {"name": "toy_channels", key: {str(c): n for c, n in enumerate(names)}, "labels": TOY_LABELS,
            "numTraining": n_cases, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
