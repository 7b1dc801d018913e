"""Varied toy image/mask pairs for HA-GAN's learning tests: one ellipsoid per case at its own position,
size and intensity, so that different cases differ a lot (a random latent is then far from a given case).

Volumes are built in network units (image in [-1, 1], mask 0/1). `write_prepared` writes them as an MSD
folder of NIfTI files and runs `synthmed.data.prepare` with an identity intensity window and a margin that
keeps whole volumes, so the trainer sees exactly these arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

BACKGROUND = -0.8
NOISE = 0.03


def ellipsoid_case(
    shape: tuple[int, int, int], centre, radii, intensity: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(image [D,H,W] float32 in [-1, 1], mask [D,H,W] uint8): one axis-aligned ellipsoid on a dim background."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    offset = (grid - np.reshape(centre, (3, 1, 1, 1))) / np.reshape(radii, (3, 1, 1, 1))
    mask = ((offset**2).sum(0) <= 1.0).astype(np.uint8)
    image = np.where(mask > 0, intensity, BACKGROUND) + rng.normal(0.0, NOISE, size=shape)
    return np.clip(image, -1.0, 1.0).astype(np.float32), mask


def varied_cases(n: int, shape=(16, 16, 16), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cases (images [N,1,*S], masks [N,*S]) with a random centre, radii (2..5.5 voxels) and
    foreground intensity (-0.2..0.9) each."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        radii = rng.uniform(2.0, 5.5, size=3)
        centre = [rng.uniform(r, s - 1 - r) for r, s in zip(radii, shape)]
        image, mask = ellipsoid_case(shape, centre, radii, float(rng.uniform(-0.2, 0.9)), rng)
        images.append(image[None])
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def two_class_cases(n: int, shape=(16, 16, 16), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` cases alternating class 0 (small dim sphere, radius ~2.5, intensity ~-0.2) and class 1 (large
    bright sphere, radius ~5, intensity ~0.7), each near the centre with some jitter; also the classes."""
    rng = np.random.default_rng(seed)
    images, masks, classes = [], [], []
    for i in range(n):
        label = i % 2
        radius = (2.5 if label == 0 else 5.0) + rng.uniform(-0.3, 0.3)
        intensity = (-0.2 if label == 0 else 0.7) + rng.uniform(-0.05, 0.05)
        centre = [(s - 1) / 2 + rng.uniform(-1.0, 1.0) for s in shape]
        image, mask = ellipsoid_case(shape, centre, [radius] * 3, intensity, rng)
        images.append(image[None])
        masks.append(mask)
        classes.append(label)
    return np.stack(images), np.stack(masks), np.array(classes)


def write_prepared(root: Path, images: np.ndarray, masks: np.ndarray, fields: dict[str, list] | None = None) -> Path:
    """Prepare ``images`` [N,1,*S] / ``masks`` [N,*S] as a dataset (all cases in the training split) and add the
    per-case manifest ``fields`` (e.g. a class key); return the manifest path."""
    from synthmed.data.prepare import PrepareOptions, prepare_dataset

    raw = root / "raw"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    ids = [f"case_{i:03d}" for i in range(len(images))]
    for case_id, image, mask in zip(ids, images, masks):
        nib.save(nib.Nifti1Image(image[0], np.eye(4)), raw / "imagesTr" / f"{case_id}.nii.gz")
        nib.save(nib.Nifti1Image(mask, np.eye(4)), raw / "labelsTr" / f"{case_id}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"name": "ellipsoids", "labels": {"0": "background", "1": "blob"}}))
    shape = tuple(int(s) for s in masks.shape[1:])
    options = PrepareOptions(shape=shape, modality="CT", intensity="window", window=(-1.0, 1.0), margin=max(shape),
                             test_fraction=0.0, val_fraction=0.0, folds=0)
    manifest = prepare_dataset([raw], root / "prepared", options, progress=False)
    if fields:
        data = json.loads(manifest.read_text())
        for case in data["cases"]:
            case.update({key: values[ids.index(case["id"])] for key, values in fields.items()})
        manifest.write_text(json.dumps(data))
    return manifest
