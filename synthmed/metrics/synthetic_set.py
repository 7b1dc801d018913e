"""Read what evaluate compares: a synthetic set folder (NIfTI for 3D, PNG for 2D) and real cases.

Also reads folders of masks alone, for rendering images with a mask-conditional generator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from synthmed.data.manifest import SPLIT_NAMES, Manifest, load_manifest
from synthmed.errors import UserError, format_problems

IMAGE_SUFFIX = "_0000.nii.gz"
PNG_SUFFIX = "_0000.png"
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


def _read_png(path: Path, problems: list[str]) -> np.ndarray | None:
    """Pixels as [H, W] or [C, H, W] (RGB), integer levels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            data = np.asarray(im)
    except Exception as e:  # Pillow raises many types for broken files
        problems.append(f"{path}: cannot read PNG ({e})")
        return None
    return np.moveaxis(data, -1, 0) if data.ndim == 3 else data


def _png_to_original_units(levels: np.ndarray, mapping: dict) -> np.ndarray:
    top = 2 ** int(mapping["bit_depth"]) - 1
    lo, hi = float(mapping["lo"]), float(mapping["hi"])
    return (lo + levels.astype(np.float64) / top * (hi - lo)).astype(np.float32)


def _png_mapping(folder: Path) -> dict:
    """The PNG level -> original unit mapping the writer recorded in dataset.json."""
    path = folder / "dataset.json"
    try:
        mapping = json.loads(path.read_text())["synthmed_png_intensity"]
        return {k: mapping[k] for k in ("bit_depth", "lo", "hi")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: needs 'synthmed_png_intensity' (bit_depth, lo, hi) to read PNG images ({e})") from None


def load_synthetic_set(folder: str | os.PathLike, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (original units, float32 ``[N, C, *shape]``), masks (int64 ``[N, *shape]``) and case names.

    Reads ``imagesTr/<case>_0000.nii.gz`` and ``labelsTr/<case>.nii.gz`` (3D, one channel), or
    ``imagesTr/<case>_0000.png`` and ``labelsTr/<case>.png`` (2D; RGB PNGs give 3 channels); every
    problem is collected and reported at once.

    Raises:
        UserError: missing folder, no images, a missing label, unreadable or non-finite files, or a
            shape other than `shape` (the prepared shape of the real cases).
    """
    folder = Path(folder)
    image_dir, label_dir = folder / "imagesTr", folder / "labelsTr"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise UserError(f"{folder}: not a synthetic set (expected imagesTr/ and labelsTr/ from `synthmed sample`)")
    if len(shape) == 2:
        return _load_png_set(folder, tuple(shape))
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


def _load_png_set(folder: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    image_paths = sorted((folder / "imagesTr").glob(f"*{PNG_SUFFIX}"))
    if not image_paths:
        raise UserError(f"{folder / 'imagesTr'}: no 2D images (*{PNG_SUFFIX})")
    mapping = _png_mapping(folder)
    problems: list[str] = []
    images, masks, names = [], [], []
    for image_path in image_paths:
        name = image_path.name[: -len(PNG_SUFFIX)]
        label_path = folder / "labelsTr" / f"{name}.png"
        if not label_path.is_file():
            problems.append(f"{label_path}: label missing for {image_path.name}")
            continue
        image, mask = _read_png(image_path, problems), _read_png(label_path, problems)
        if image is None or mask is None:
            continue
        image = image[None] if image.ndim == 2 else image
        if image.shape[1:] != shape or mask.shape != shape:
            problems.append(f"{name}: image {list(image.shape[1:])} and mask {list(mask.shape)}, expected {list(shape)} "
                            "(the prepared shape of the real cases)")
            continue
        images.append(_png_to_original_units(image, mapping))
        masks.append(mask.astype(np.int64))
        names.append(name)
    if problems:
        raise UserError(format_problems(f"{folder}: synthetic set cannot be evaluated", problems))
    channels = {im.shape[0] for im in images}
    if len(channels) > 1:
        raise UserError(f"{folder}: images mix channel counts {sorted(channels)} (grayscale and RGB)")
    return np.stack(images), np.stack(masks), names


MASK_ENDINGS = (".png", ".nii.gz", ".nii")


def load_masks(folder: str | os.PathLike, shape: tuple[int, ...], num_labels: int) -> tuple[np.ndarray, list[str]]:
    """Integer masks ``[N, *shape]`` and their names from a folder, to render images for (C-SG).

    `folder` is a synthetic set (its ``labelsTr/`` is read) or a folder of mask files (PNG for 2D,
    NIfTI for 3D). A binary mask stored as 0/255 (a common PNG convention) becomes 0/1.

    Raises:
        UserError: no masks, unreadable files, a wrong shape, or label values >= `num_labels`;
            every problem is collected and named by file.
    """
    folder = Path(folder)
    source = folder / "labelsTr" if (folder / "labelsTr").is_dir() else folder
    if not source.is_dir():
        raise UserError(f"{folder}: mask folder not found")
    paths = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(MASK_ENDINGS))
    if not paths:
        raise UserError(f"{source}: no mask files ({', '.join(MASK_ENDINGS)})")
    problems: list[str] = []
    masks, names = [], []
    for path in paths:
        mask = _read_png(path, problems) if path.name.lower().endswith(".png") else _read(path, problems)
        if mask is None:
            continue
        mask = np.rint(mask).astype(np.int64)
        if set(np.unique(mask).tolist()) <= {0, 255} and num_labels == 2:
            mask = (mask > 0).astype(np.int64)
        if mask.shape != tuple(shape):
            problems.append(f"{path}: mask shape {list(mask.shape)}, the generator makes {list(shape)}")
        elif mask.min() < 0 or mask.max() >= num_labels:
            problems.append(f"{path}: label values {sorted(np.unique(mask).tolist())} outside 0..{num_labels - 1}")
        else:
            masks.append(mask)
            names.append(path.name.split(".")[0])
    if problems:
        raise UserError(format_problems(f"{source}: masks cannot be used", problems))
    return np.stack(masks), names
