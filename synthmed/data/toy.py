"""A tiny synthetic NIfTI dataset, for tests and for trying the tool without real data.

Each case is a noisy CT-like volume (background about -800 HU) holding a bright sphere (label 1,
about +200 HU) of random radius at the volume centre, with a smaller inner core (label 2, about
+400 HU). Everything is drawn from `seed`, so equal seeds write equal files.

Layouts (what `synthmed prepare` accepts):
- ``"msd"``: ``imagesTr/<id>.nii.gz``, ``labelsTr/<id>.nii.gz`` and ``dataset.json`` (MSD style,
  labels as ``{"0": "background", ...}``);
- ``"folders"``: ``images/<id>.nii.gz`` and ``labels/<id>.nii.gz``;
- ``"datalist"``: ``datalist.json`` (MONAI style) next to ``data/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from synthmed.errors import UserError

TOY_LABELS = {"0": "background", "1": "sphere", "2": "core"}
LAYOUTS = ("msd", "folders", "datalist")


def toy_case(
    shape: tuple[int, int, int], radius_fraction: float, rng: np.random.Generator, modality: str = "CT"
) -> tuple[np.ndarray, np.ndarray]:
    """One image [D,H,W] float32 and mask [D,H,W] uint8 with a sphere of `radius_fraction` x min(shape)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"))
    dist = np.sqrt((grid**2).sum(0))
    radius = radius_fraction * min(shape)
    mask = np.zeros(shape, np.uint8)
    mask[dist <= radius] = 1
    mask[dist <= radius / 2] = 2
    if modality.upper() == "CT":
        levels = np.array([-800.0, 200.0, 400.0])  # HU of background, sphere, core
        noise = 20.0
    else:  # MRI-like: arbitrary positive units with a per-case scale, as in real MRI
        levels = np.array([50.0, 400.0, 700.0]) * rng.uniform(0.5, 2.0)
        noise = 10.0
    image = levels[mask] + rng.normal(0.0, noise, size=shape)
    return image.astype(np.float32), mask


def write_toy_dataset(
    root: str | os.PathLike,
    n_cases: int = 12,
    shape: tuple[int, int, int] = (16, 16, 16),
    layout: str = "msd",
    seed: int = 0,
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
    modality: str = "CT",
) -> Path:
    """Write `n_cases` toy NIfTI cases under `root` in `layout`; return the path to give `prepare`.

    Args:
        root: folder to create (it may exist; files in it are overwritten).
        n_cases: number of cases, named ``toy_000``, ``toy_001``, ...
        shape: volume shape in voxels.
        layout: ``"msd"``, ``"folders"`` or ``"datalist"``.
        seed: seed of every random draw (radius and noise).
        spacing: voxel size in mm (the affine is diagonal, RAS).
        modality: ``"CT"`` (HU-like values) or anything else (MRI-like values).

    Returns:
        The folder (msd, folders) or the datalist JSON file (datalist).
    """
    if layout not in LAYOUTS:
        raise UserError(f"unknown toy layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [-s * (n - 1) / 2 for s, n in zip(spacing, shape)]  # centre the volume at 0
    image_dir, label_dir = {
        "msd": ("imagesTr", "labelsTr"),
        "folders": ("images", "labels"),
        "datalist": ("data/images", "data/labels"),
    }[layout]
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / label_dir).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n_cases):
        case_id = f"toy_{i:03d}"
        image, mask = toy_case(tuple(shape), rng.uniform(0.25, 0.40), rng, modality)
        nib.save(nib.Nifti1Image(image, affine), root / image_dir / f"{case_id}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / label_dir / f"{case_id}.nii.gz")
        entries.append({"image": f"{image_dir}/{case_id}.nii.gz", "label": f"{label_dir}/{case_id}.nii.gz"})
    if layout == "msd":
        meta = {
            "name": "toy",
            "modality": {"0": modality},
            "labels": TOY_LABELS,
            "numTraining": n_cases,
            "training": [{"image": "./" + e["image"], "label": "./" + e["label"]} for e in entries],
        }
        (root / "dataset.json").write_text(json.dumps(meta, indent=2))
        return root
    if layout == "datalist":
        datalist = {
            "labels": TOY_LABELS,
            "training": [dict(e, id=f"toy_{i:03d}", source="toy") for i, e in enumerate(entries)],
        }
        path = root / "datalist.json"
        path.write_text(json.dumps(datalist, indent=2))
        return path
    return root
