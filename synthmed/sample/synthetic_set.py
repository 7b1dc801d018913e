"""Read synthetic sets written by `synthmed sample` (NIfTI for 3D, PNG for 2D), and pair folders of other tools.

The one reader of the set format that `synthmed.sample.writers` defines: evaluate, downstream and the
visual Turing test all read sets through it. It also reads sets made elsewhere (MAISI, medigan, ...):
an nnU-Net-like ``imagesTr/`` + ``labelsTr/`` folder, or ``images/`` + ``masks/`` (or ``labels/``)
with matching file names, NIfTI or PNG; a PNG without synthmed's recorded intensity mapping is read
as its levels or mapped onto a given range (``png_range``). Also reads folders of masks alone, for
rendering images with a mask-conditional generator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from synthmed.data.checks import read_nifti
from synthmed.errors import UserError, format_problems

ENDINGS = (".nii.gz", ".png", ".nii")
PAIR_IMAGE_DIR = "images"
PAIR_MASK_DIRS = ("masks", "labels")
MASK_ENDINGS = (".png", ".nii.gz", ".nii")


def _read_nifti(path: Path, problems: list[str]) -> np.ndarray | None:
    read = read_nifti(path, problems)
    if read is None:
        return None
    data = read[0]
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


def _read_any(path: Path, problems: list[str]) -> np.ndarray | None:
    return _read_png(path, problems) if path.name.lower().endswith(".png") else _read_nifti(path, problems)


def set_ending(folder: Path) -> str:
    """".nii.gz" or ".png": from dataset.json's file_ending, else from the label files present."""
    try:
        ending = json.loads((folder / "dataset.json").read_text()).get("file_ending")
    except (OSError, ValueError, AttributeError):
        ending = None
    if ending in ENDINGS:
        return ending
    for candidate in ENDINGS:
        if any((folder / "labelsTr").glob(f"*{candidate}")):
            return candidate
    raise UserError(f"{folder / 'labelsTr'}: no label files ({', '.join('*' + e for e in ENDINGS)}); "
                    f"is {folder} a synthetic set?")


def synthetic_case_files(folder: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(case id, channel-0 image file, label file) of every case of a synthetic set, sorted by id.

    Raises:
        UserError: the folder is a ``*.partial`` leftover, its imagesTr/, labelsTr/ or label files are
            missing, or a label has no image or an image no label (every such file named).
    """
    folder = Path(folder)
    if folder.name.endswith(".partial"):
        raise UserError(f"{folder}: an unfinished output folder (*.partial, left by an interrupted run), "
                        f"not a synthetic set; sample again or use the finished folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a synthetic set (folder not found)")
    if not (folder / "imagesTr").is_dir() or not (folder / "labelsTr").is_dir():
        if (folder / PAIR_IMAGE_DIR).is_dir() and any((folder / d).is_dir() for d in PAIR_MASK_DIRS):
            return paired_case_files(folder)
        raise UserError(f"{folder}: not a synthetic set (expected imagesTr/ and labelsTr/ as `synthmed sample` and "
                        f"nnU-Net write them, or images/ and masks/ with matching file names)")
    ending = set_ending(folder)
    cases, missing = [], []
    for label in sorted((folder / "labelsTr").glob(f"*{ending}")):
        case_id = label.name[: -len(ending)]
        image = folder / "imagesTr" / f"{case_id}_0000{ending}"
        if not image.is_file():
            missing.append(f"{image}: image missing for label {label.name}")
        cases.append((case_id, image, label))
    labelled = {case_id for case_id, _, _ in cases}
    for image in sorted((folder / "imagesTr").glob(f"*_0000{ending}")):
        case_id = image.name[: -len(f"_0000{ending}")]
        if case_id not in labelled:
            missing.append(f"{folder / 'labelsTr' / (case_id + ending)}: mask missing for image {image.name}")
    if missing:
        raise UserError(format_problems(f"{folder}: incomplete synthetic set", missing))
    return cases


def paired_case_files(folder: Path) -> list[tuple[str, Path, Path]]:
    """(case id, image, mask) of an ``images/`` + ``masks/`` (or ``labels/``) folder, paired by file name.

    Raises:
        UserError: no image files, or an image without a mask or a mask without an image (each named).
    """
    images_dir = folder / PAIR_IMAGE_DIR
    masks_dir = next(folder / d for d in PAIR_MASK_DIRS if (folder / d).is_dir())
    images, masks = _files_by_id(images_dir), _files_by_id(masks_dir)
    if not images:
        raise UserError(f"{images_dir}: no image files ({', '.join('*' + e for e in ENDINGS)})")
    missing = [f"{masks_dir / images[i].name}: mask missing for image {images[i].name}" for i in sorted(set(images) - set(masks))]
    missing += [f"{images_dir / masks[i].name}: image missing for mask {masks[i].name}" for i in sorted(set(masks) - set(images))]
    if missing:
        raise UserError(format_problems(f"{folder}: incomplete set of pairs", missing))
    return [(case_id, images[case_id], masks[case_id]) for case_id in sorted(images)]


def _files_by_id(folder: Path) -> dict[str, Path]:
    """{name without ending: path} of the image files (ENDINGS) in `folder`."""
    found = {}
    for path in sorted(folder.iterdir()):
        ending = next((e for e in ENDINGS if path.name.lower().endswith(e)), None)
        if ending and path.is_file() and not path.name.startswith("."):
            found[path.name[: -len(ending)]] = path
    return found


def _png_mapping(folder: Path) -> dict | None:
    """The PNG level -> original unit mapping that synthmed's writer recorded in dataset.json; None without one."""
    path = folder / "dataset.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or "synthmed_png_intensity" not in document:
        return None
    try:
        mapping = document["synthmed_png_intensity"]
        found: dict = {k: float(mapping[k]) for k in ("bit_depth", "lo", "hi")}
        if "channels" in mapping:  # grey channel files, each with its own range
            found["channels"] = [(float(c["lo"]), float(c["hi"])) for c in mapping["channels"]]
        return found
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: 'synthmed_png_intensity' needs bit_depth, lo and hi, and lo and hi for each of "
                        f"its channels ({e})") from None


def recorded_png_range(folder: str | os.PathLike) -> tuple[float, float] | None:
    """(lo, hi) in original units that a synthmed PNG set's levels span; None for a set without that record."""
    mapping = _png_mapping(Path(folder))
    return None if mapping is None else (mapping["lo"], mapping["hi"])


def _foreign_png(levels: np.ndarray, png_range: tuple[float, float] | None) -> np.ndarray:
    """A PNG written by another tool: grey RGB collapsed to one channel; levels mapped onto `png_range` (None: kept)."""
    if levels.shape[0] in (3, 4) and (levels[:3] == levels[:1]).all():
        levels = levels[:1]  # grey stored as RGB(A)
    if png_range is None:
        return levels.astype(np.float64)
    top = 65535.0 if levels.dtype == np.uint16 else 255.0
    return png_range[0] + levels.astype(np.float64) / top * (png_range[1] - png_range[0])


def _read_png_channels(image_path: Path, mapping: dict, problems: list[str],
                       mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A case of grey channel PNGs (``<case>_0000.png … _000N.png``, `image_path` the first), each mapped
    from its levels with its own recorded range; None after a problem (a missing channel file named)."""
    stem = image_path.name[: -len("_0000.png")]
    top = 2 ** mapping["bit_depth"] - 1
    channels = []
    for c, (lo, hi) in enumerate(mapping["channels"]):
        path = image_path.parent / f"{stem}_{c:04d}.png"
        if not path.is_file():
            problems.append(f"{path}: channel {c} missing (dataset.json records {len(mapping['channels'])} channels)")
            return None
        levels = _read_png(path, problems)
        if levels is None:
            return None
        if levels.ndim != 2:
            problems.append(f"{path}: channel {c} is not one grey image (shape {list(levels.shape)})")
            return None
        channels.append(lo + levels.astype(np.float64) / top * (hi - lo))
    return np.stack(channels).astype(np.float32), mask.astype(np.int64)


def read_synthetic_case(folder: str | os.PathLike, image_path: Path, label_path: Path, problems: list[str],
                        png_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(image float32 [C, *S] in original units, mask int64 [*S]) of one case; None after a problem.

    3D cases of synthmed's layout read every channel file ``<case>_XXXX.nii.gz`` (other NIfTI pairs:
    the one file); 2D cases one PNG (RGB gives 3 channels), or one grey PNG per channel
    ``<case>_XXXX.png`` where dataset.json records each channel's range, mapped from PNG levels to
    original units with dataset.json's recorded range; a PNG set without that record (another tool's) is mapped
    by `_foreign_png`, and its 0/255 binary masks become 0/1.
    """
    folder = Path(folder)
    mask = _read_any(label_path, problems)
    if label_path.name.lower().endswith(".png"):
        levels = _read_png(image_path, problems)
        if levels is None or mask is None:
            return None
        levels = levels[None] if levels.ndim == 2 else levels
        m = _png_mapping(folder)
        if m is None:
            mask = (mask > 0) if set(np.unique(mask).tolist()) == {0, 255} else mask
            mask = mask[0] if mask.ndim == 3 else mask  # a grey mask stored as RGB
            return _foreign_png(levels, png_range).astype(np.float32), mask.astype(np.int64)
        if "channels" in m:
            return _read_png_channels(image_path, m, problems, mask)
        image = m["lo"] + levels.astype(np.float64) / (2 ** m["bit_depth"] - 1) * (m["hi"] - m["lo"])
        return image.astype(np.float32), mask.astype(np.int64)
    if not image_path.name.endswith("_0000.nii.gz"):  # a pair folder: one image file per case
        image = _read_nifti(image_path, problems)
        return None if image is None or mask is None else (image[None].astype(np.float32), np.rint(mask).astype(np.int64))
    stem = image_path.name[: -len("_0000.nii.gz")]
    channels = [_read_nifti(p, problems) for p in sorted(image_path.parent.glob(f"{stem}_[0-9][0-9][0-9][0-9].nii.gz"))]
    if mask is None or any(c is None for c in channels):
        return None
    return np.stack(channels).astype(np.float32), np.rint(mask).astype(np.int64)


def load_synthetic_set(folder: str | os.PathLike, shape: tuple[int, ...] | None,
                       indices: list[int] | None = None, png_range: tuple[float, float] | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (original units, float32 ``[N, C, *shape]``), masks (int64 ``[N, *shape]``) and case names.

    Masks come back as written: the manifest's class indices 0..L-1 (their source values are recorded
    in ``dataset.json``; see `synthmed.data.nnunet_json.restore_mask`).

    Reads cases ``indices`` (positions in id order; None: all) of a set; every problem is collected
    and reported at once. ``shape=None``: every case must have the first case's shape. `png_range`:
    see `read_synthetic_case`.

    Raises:
        UserError: missing folder, no cases, an index out of range, a missing label or image,
            unreadable or non-finite files, mixed channel counts, or a shape other than `shape` (the
            prepared shape of the real cases).
    """
    folder = Path(folder)
    files = synthetic_case_files(folder)
    if not files:
        raise UserError(f"{folder / 'labelsTr'}: no cases")
    if indices is not None:
        if indices and max(indices) >= len(files):
            raise UserError(f"{folder}: has {len(files)} synthetic cases, {max(indices) + 1} asked for")
        files = [files[i] for i in indices]
    problems: list[str] = []
    images, masks, names = [], [], []
    for name, image_path, label_path in files:
        case = read_synthetic_case(folder, image_path, label_path, problems, png_range)
        if case is None:
            continue
        image, mask = case
        shape = tuple(mask.shape) if shape is None else shape
        if image.shape[1:] != tuple(shape) or mask.shape != tuple(shape):
            problems.append(f"{name}: image {list(image.shape[1:])} and mask {list(mask.shape)}, expected "
                            f"{list(shape)} (the prepared shape of the real cases)")
            continue
        images.append(image)
        masks.append(mask)
        names.append(name)
    if len({im.shape[0] for im in images}) > 1:
        problems.append(f"images mix channel counts {sorted({im.shape[0] for im in images})}")
    if problems:
        raise UserError(format_problems(f"{folder}: synthetic set cannot be read", problems))
    if not images:
        return np.zeros((0, 1, *(shape or ())), np.float32), np.zeros((0, *(shape or ())), np.int64), []
    return np.stack(images), np.stack(masks), names


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
        mask = _read_any(path, problems)
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
