"""Read what evaluate compares: a synthetic set folder and the real cases of a manifest split."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from synthmed.data.manifest import SPLIT_NAMES, Manifest, load_manifest
from synthmed.errors import UserError, format_problems

IMAGE_SUFFIX = "_0000.nii.gz"
DEFAULT_SPLIT = "train"


def parse_real_spec(spec: str) -> tuple[Manifest, str]:
    """``MANIFEST[:split]`` -> (manifest, split); the split defaults to "train".

    Raises:
        UserError: unknown split or unreadable manifest.
    """
    path, split = spec, DEFAULT_SPLIT
    head, sep, tail = spec.rpartition(":")
    if sep and head and "/" not in tail and "\\" not in tail:
        if tail not in SPLIT_NAMES:
            raise UserError(f"--real {spec}: unknown split {tail!r}; valid splits: {', '.join(SPLIT_NAMES)}")
        path, split = head, tail
    return load_manifest(path), split


def _read(path: Path, problems: list[str]) -> np.ndarray | None:
    try:
        data = np.asarray(nib.load(str(path)).dataobj)
    except Exception as e:  # nibabel raises many types for broken files
        problems.append(f"{path}: cannot read NIfTI ({e})")
        return None
    if not np.isfinite(data).all():
        problems.append(f"{path}: holds NaN or infinite voxels")
        return None
    return data


def load_synthetic_set(folder: str | os.PathLike, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (original units, float32 ``[N, 1, *shape]``), masks (int64 ``[N, *shape]``) and case names.

    Reads ``imagesTr/<case>_0000.nii.gz`` and ``labelsTr/<case>.nii.gz``; every problem is collected
    and reported at once.

    Raises:
        UserError: missing folder, no images, a missing label, unreadable or non-finite files, or a
            shape other than `shape` (the prepared shape of the real cases).
    """
    folder = Path(folder)
    image_dir, label_dir = folder / "imagesTr", folder / "labelsTr"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise UserError(f"{folder}: not a synthetic set (expected imagesTr/ and labelsTr/ from `synthmed sample`)")
    image_paths = sorted(image_dir.glob(f"*{IMAGE_SUFFIX}"))
    if not image_paths:
        raise UserError(f"{image_dir}: no images (*{IMAGE_SUFFIX})")
    problems: list[str] = []
    images, masks, names = [], [], []
    for image_path in image_paths:
        name = image_path.name[: -len(IMAGE_SUFFIX)]
        label_path = label_dir / f"{name}.nii.gz"
        if not label_path.is_file():
            problems.append(f"{label_path}: label missing for {image_path.name}")
            continue
        image, mask = _read(image_path, problems), _read(label_path, problems)
        if image is None or mask is None:
            continue
        if image.shape != tuple(shape) or mask.shape != tuple(shape):
            problems.append(f"{name}: image {list(image.shape)} and mask {list(mask.shape)}, expected {list(shape)} "
                            "(the prepared shape of the real cases)")
            continue
        images.append(image.astype(np.float32)[None])
        masks.append(np.rint(mask).astype(np.int64))
        names.append(name)
    if problems:
        raise UserError(format_problems(f"{folder}: synthetic set cannot be evaluated", problems))
    return np.stack(images), np.stack(masks), names
