"""`synthmed prepare` for 2D: images (PNG, JPEG, TIFF) and slices or slice mosaics of 3D volumes.

Output (the 2D conventions): ``OUT/cases/<id>.npz`` with ``image`` float32 [C,H,W] in [-1, 1]
(C = 1 grayscale, 3 RGB) and ``mask`` uint8 [H,W]; ``manifest.json`` whose ``preprocessing`` has
``dims: 2``, ``shape: [H, W]``, ``channels``, ``bit_depth`` (8 or 16: the depth synthetic PNGs are
written with) and ``intensity``; case entries have ``spacing: [sy, sx]`` and ``affine: null``.

2D images (``preprocessing.input == "images"``):
- read and checked by `images2d` (mask rules there: JPEG masks are thresholded at luminance > 127
  and refused when they do not cluster near 0 and 255; 0/255 PNG masks become 0/1);
- channels: 3 when any image has colour (grayscale images are then repeated over R, G, B), else 1;
  ``channels=1`` turns colour into luminance, ``channels=3`` repeats grayscale;
- intensity (linear to [-1, 1]): 8-bit images: the window 0..255; 16-bit (and other TIFF pixel
  types): the data's own range, min..max over all images (16-bit files often hold 10- or 12-bit
  data, which 0..65535 would squeeze into a sliver of [-1, 1]); a given ``window`` or
  ``intensity="percentile"`` (per image) overrides it. Synthetic PNGs map [-1, 1] back onto this
  range, at ``bit_depth`` 8 (8-bit input) or 16;
- shape: ``resize`` (default), ``pad_resize`` (pad to a square, then resize) or ``pad_crop`` (see
  `preprocess2d`); the original size of each image is kept in its case entry (``original_shape``),
  and ``spacing`` is the size of an output pixel in input pixels (``spacing_unit: "pixel"``);
- all images must have the same pixel type (8-bit, 16-bit, ...); every problem of every file is
  collected and raised together.

Slices of 3D volumes (``input == "slices"`` or ``"mosaic"``): each volume is checked as in 3D
(`checks`), preprocessed as in 3D (intensity, RAS, spacing) and cut by `slices`. One case per slice
(id ``<volume>_slice<index>``), or per volume one mosaic (id ``<volume>``). The group of every slice
is its volume's group (``group_regex`` matches the volume id), so slices of one patient never
straddle splits. Spacing is in mm; ``bit_depth`` is 16.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthmed.data.checks import CheckTally, checked_cases
from synthmed.data.discover import CaseRecord, Source
from synthmed.data.images2d import (
    JPEG_MASK_THRESHOLD,
    MAX_MIDGREY_FRACTION,
    MIDGREY_LEVELS,
    TIFF_SUFFIXES,
    Image2D,
    luminance,
    read_image_2d,
    read_mask_2d,
)
from synthmed.data.manifest import MANIFEST_NAME
from synthmed.data.preprocess import intensity_range
from synthmed.data.preprocess2d import fit_to_shape
from synthmed.data.prepare import (
    DEFAULT_SHAPE_SLICES,
    PrepareOptions,
    _declared_labels,
    _resolve_modality,
    intensity_entry,
    write_manifest,
)
from synthmed.data.slices import SLICE_AXES, mosaic_of_volume, prepare_volume, select_slices, slices_of_volume
from synthmed.data.splits import group_keys, split_problems
from synthmed.errors import UserError, format_problems
from synthmed.fileio import atomic_directory

log = logging.getLogger(__name__)

BIT_DEPTH_SLICES = 16  # slices of volumes: physical units need more than 256 levels


def prepare_2d(
    sources: list[Source], out: Path, options: PrepareOptions, overwrite: bool = False, progress: bool = True
) -> Path:
    """Prepare 2D images, or slices of 3D volumes, into `out`; return the manifest path.

    Raises:
        UserError: every problem found (options, files, cases), listed at once; nothing is written.
    """
    if sources[0].dims == 2:
        if options.slicing:
            raise UserError("--slices / --mosaic cut 3D volumes; these inputs are already 2D images")
        return _prepare_images(sources, out, options, overwrite, progress)
    return _prepare_slices(sources, out, options, overwrite, progress)


# --- shared ---------------------------------------------------------------------------------------


def _shape_2d(options: PrepareOptions, default: tuple[int, int] | None) -> tuple[int, int] | None:
    shape = options.shape or default
    if shape is not None and len(shape) != 2:
        raise UserError(f"--shape {' '.join(map(str, shape))}: 2D cases need 2 numbers (H W)")
    return None if shape is None else (int(shape[0]), int(shape[1]))


def _save_case(tmp: Path, case_id: str, image: np.ndarray, mask: np.ndarray) -> str:
    cache = f"cases/{case_id}.npz"
    np.savez(tmp / cache, image=np.asarray(image, dtype=np.float32), mask=np.asarray(mask, dtype=np.uint8))
    return cache


def _label_counts(mask: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)


def _report(out: Path, sources: list[Source], entries: list[dict], splits: dict, what: str) -> Path:
    path = out / MANIFEST_NAME
    n_folds = len(splits["folds"])
    empty = [e["id"] for e in entries if not any(e["label_voxels"].values())]
    if empty:
        log.warning(
            "%d of %d cases have an empty mask (no labelled pixel): %s",
            len(empty), len(entries), ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""),
        )
    print(
        f"Prepared {len(entries)} 2D cases ({what}) from {len(sources)} source(s) "
        f"({', '.join(s.name for s in sources)}) into {out}: train {len(splits['train'])}, "
        f"val {len(splits['val'])}, test {len(splits['test'])}"
        + (f", {n_folds} folds of the train cases" if n_folds else "")
        + f" (seed {splits['seed']}). {len(empty)} empty mask(s). Manifest: {path}"
    )
    return path


# --- 2D images ------------------------------------------------------------------------------------


def _header_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header without decoding the pixels; None when unreadable."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                axes = tif.series[0].axes
            return (shape[1], shape[2]) if axes.startswith("S") else (shape[0], shape[1])
        from PIL import Image

        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - any failure: the full read reports it, naming the file
        return None


def _common_size(records: list[CaseRecord]) -> tuple[int, int]:
    """The one size of all images (for a missing --shape), or a UserError listing the sizes."""
    sizes = Counter(s for s in (_header_size(r.image) for r in records) if s is not None)
    if len(sizes) == 1:
        return next(iter(sizes))
    top = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(5))
    raise UserError(
        f"the images have {len(sizes)} different sizes (H x W: {top}{', ...' if len(sizes) > 5 else ''}); "
        f"pass --shape H W, and --shape-mode resize (default), pad_resize (keeps the aspect ratio) or pad_crop"
    )


def _data_range(records: list[CaseRecord], progress: bool) -> tuple[float, float]:
    """Min and max pixel value over all readable images (unreadable ones are reported later)."""
    lo, hi = np.inf, -np.inf
    for rec in tqdm(records, desc="intensity range", unit="image", disable=not progress or None, leave=False):
        img = read_image_2d(rec.image, [])
        if img is not None:
            lo, hi = min(lo, float(img.pixels.min())), max(hi, float(img.pixels.max()))
    if not np.isfinite(lo):
        return 0.0, 1.0
    return lo, (hi if hi > lo else lo + 1.0)


def _first_pixel_type(records: list[CaseRecord]) -> str | None:
    for rec in records:
        img = read_image_2d(rec.image, [])
        if img is not None:
            return img.pixel_type
    return None


def _resolve_image_intensity(
    records: list[CaseRecord], options: PrepareOptions, progress: bool
) -> tuple[str, tuple[float, float] | None, dict]:
    """(mode, window or None for percentile, manifest intensity entry without the percentile refs)."""
    if options.intensity == "percentile":
        return "percentile", None, {}
    if options.window is not None:
        lo, hi = options.window
        return "window", (lo, hi), {"mode": "window", "lo": float(lo), "hi": float(hi), "from": "--window"}
    if _first_pixel_type(records) in (None, "uint8"):
        return "window", (0.0, 255.0), {"mode": "window", "lo": 0.0, "hi": 255.0, "from": "8-bit range"}
    lo, hi = _data_range(records, progress)
    return "window", (lo, hi), {"mode": "window", "lo": lo, "hi": hi, "from": "data range"}


def _to_unit_float32(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`intensity_to_unit` in float32 (exact enough for 16-bit levels, half the memory of float64)."""
    if not hi > lo:
        raise ValueError(f"intensity range needs hi > lo, got lo={lo}, hi={hi}")
    scale = np.float32(2.0 / (hi - lo))
    unit = (pixels.astype(np.float32) - np.float32(lo)) * scale - np.float32(1.0)
    return np.clip(unit, -1.0, 1.0, out=unit)


def _image_to_unit(img: Image2D, mode: str, window: tuple[float, float] | None, options: PrepareOptions):
    """(image float32 [C,H,W] in [-1, 1], lo, hi) with the channel rule of `options.channels`."""
    pixels = img.pixels
    if options.channels == 1 and img.color:
        pixels = luminance(pixels)
    if mode == "percentile":
        lo, hi = intensity_range(pixels, "percentile", (0.0, 1.0), options.percentiles)
    else:
        assert window is not None
        lo, hi = window
    unit = _to_unit_float32(pixels, lo, hi)
    unit = unit[None] if unit.ndim == 2 else np.moveaxis(unit, -1, 0)
    if options.channels == 3 and unit.shape[0] == 1:
        unit = np.repeat(unit, 3, axis=0)
    return unit, lo, hi


def _check_image_options(options: PrepareOptions) -> None:
    problems = []
    if options.spacing is not None:
        problems.append("--spacing resamples 3D volumes; 2D images are resized with --shape")
    if options.crop_to_image:
        problems.append("--crop-to-image is for 3D volumes")
    if problems:
        raise UserError(format_problems("Invalid options for 2D images", problems))


def _pixel_type_problem(types: dict[str, list[Path]]) -> list[str]:
    if len(types) <= 1:
        return []
    parts = ", ".join(f"{t} ({len(paths)}, e.g. {paths[0]})" for t, paths in sorted(types.items()))
    return [f"images mix pixel types: {parts}; convert them to one bit depth"]


def _prepare_images(
    sources: list[Source], out: Path, options: PrepareOptions, overwrite: bool, progress: bool
) -> Path:
    _check_image_options(options)
    records = [c for s in sources for c in s.cases]
    shape = _shape_2d(options, None) or _common_size(records)
    shape_mode = options.resolved_shape_mode(2)
    declared = _declared_labels(sources, options)
    modality = options.modality or next((s.modality for s in sources if s.modality), None) or "image"
    groups = group_keys([r.id for r in records], [r.group for r in records], options.group_regex)
    tally = CheckTally(len(records), split_problems(
        len(set(groups.values())), len(records), options.test_fraction, options.val_fraction, options.folds
    ))
    mode, window, intensity = _resolve_image_intensity(records, options, progress)

    entries: list[dict] = []
    pixel_types: dict[str, list[Path]] = {}
    rules: Counter = Counter()
    jpeg_pixels = jpeg_midgrey = 0
    any_color = False
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "cases").mkdir()
        bar = tqdm(records, desc="prepare", unit="image", disable=not progress or None, leave=False)
        for rec in bar:
            case_problems: list[str] = []
            img = read_image_2d(rec.image, case_problems)
            msk = read_mask_2d(rec.label, case_problems)
            if img is not None and msk is not None:
                case_problems += _pair_problems(rec, img, msk.labels, declared)
            if case_problems:
                tally.add_failure(case_problems)
                continue
            assert img is not None and msk is not None
            pixel_types.setdefault(img.pixel_type, []).append(rec.image)
            tally.labels_seen |= set(np.flatnonzero(_label_counts(msk.labels)).tolist())
            rules[msk.rule] += 1
            if msk.rule == "jpeg_threshold":
                jpeg_pixels += msk.labels.size
                jpeg_midgrey += msk.midgrey_pixels
            if tally.problems or len(pixel_types) > 1:  # output will be discarded: only check the rest
                continue
            unit, lo, hi = _image_to_unit(img, mode, window, options)
            any_color |= unit.shape[0] == 3
            fitted = fit_to_shape(unit, msk.labels, shape, shape_mode)
            entries.append({
                "id": rec.id,
                "source": rec.source,
                "group": groups[rec.id],
                "image_file": str(rec.image),
                "label_file": str(rec.label),
                "original_shape": list(msk.labels.shape),
                "original_channels": 3 if img.color else 1,
                "original_pixel_type": img.pixel_type,
                "shape": list(shape),
                "spacing": fitted.spacing,
                "affine": None,
                "intensity": {"lo": float(lo), "hi": float(hi)},
                "mask_rule": msk.rule,
                "label_voxels": {},
                "foreground_lost_voxels": fitted.foreground_lost,
                "fixes": msk.notes,
                "cache": _save_case(tmp, rec.id, fitted.image, fitted.mask),
                "_counts": _label_counts(fitted.mask),
            })
        bar.close()
        tally.problems += _pixel_type_problem(pixel_types)
        if entries and len(entries) == len(records) and all(e["_counts"][1:].sum() == 0 for e in entries):
            tally.problems.append(
                f"all {len(entries)} masks are empty after reading (mask rules: {dict(rules)}); "
                f"check the mask files and their values"
            )
        tally.raise_if_any()

        channels = options.channels or (3 if any_color else 1)
        if channels == 3:
            _expand_gray_to_rgb(tmp, entries)
        if mode == "percentile":
            intensity = intensity_entry("percentile", (0.0, 1.0), options.percentiles, entries)
        pixel_type = next(iter(pixel_types), "uint8")
        preprocessing = {
            "dims": 2,
            "input": "images",
            "shape": list(shape),
            "shape_mode": shape_mode,
            "channels": channels,
            "bit_depth": 8 if pixel_type == "uint8" else 16,
            "pixel_type": pixel_type,
            "spacing": None,
            "spacing_unit": "pixel",
            "modality": modality,
            "intensity": intensity,
            "masks": {
                "rules": dict(sorted(rules.items())),
                "jpeg_threshold": JPEG_MASK_THRESHOLD,
                "jpeg_midgrey_levels": list(MIDGREY_LEVELS),
                "jpeg_max_midgrey_fraction": MAX_MIDGREY_FRACTION,
                "jpeg_mask_pixels": jpeg_pixels,
                "jpeg_midgrey_pixels": jpeg_midgrey,
            },
        }
        splits = write_manifest(tmp, sources, entries, declared, tally.labels_seen, options, preprocessing)
    return _report(out, sources, entries, splits, f"images, {'x'.join(map(str, shape))} {shape_mode}")


def _pair_problems(rec: CaseRecord, img: Image2D, labels: np.ndarray, declared: dict[int, str] | None) -> list[str]:
    problems = []
    image_shape = img.pixels.shape[:2]
    if labels.shape != image_shape:
        problems.append(
            f"{rec.label}: mask size {labels.shape[0]}x{labels.shape[1]} differs from image size "
            f"{image_shape[0]}x{image_shape[1]} (H x W, {rec.image.name})"
        )
    if declared is not None:
        unknown = sorted(set(np.flatnonzero(_label_counts(labels)).tolist()) - set(declared))
        if unknown:
            problems.append(f"{rec.label}: label values {unknown} outside the declared labels {sorted(declared)}")
    return problems


def _expand_gray_to_rgb(tmp: Path, entries: list[dict]) -> None:
    """Repeat the one channel of grayscale cases over R, G, B (the dataset has colour images)."""
    for e in entries:
        path = tmp / e["cache"]
        with np.load(path) as z:
            image, mask = z["image"], z["mask"]
        if image.shape[0] == 1:
            np.savez(path, image=np.repeat(image, 3, axis=0), mask=mask)


# --- slices of 3D volumes -------------------------------------------------------------------------


def _slice_settings(options: PrepareOptions) -> tuple[int, tuple[int, int], tuple[int, int] | None]:
    """(RAS axis, output shape, mosaic tile shape or None); refuses inconsistent options."""
    axis = SLICE_AXES[options.slices or "axial"]
    shape = _shape_2d(options, DEFAULT_SHAPE_SLICES)
    assert shape is not None
    if options.channels == 3:
        raise UserError("--channels 3: slices of volumes have one channel")
    if options.mosaic is None:
        return axis, shape, None
    rows, cols = options.mosaic
    if shape[0] % rows or shape[1] % cols:
        raise UserError(
            f"--shape {shape[0]} {shape[1]} is not divisible into a {rows} x {cols} mosaic; use a multiple, "
            f"e.g. --shape {rows * max(1, shape[0] // rows)} {cols * max(1, shape[1] // cols)}"
        )
    return axis, shape, (shape[0] // rows, shape[1] // cols)


def _prepare_slices(
    sources: list[Source], out: Path, options: PrepareOptions, overwrite: bool, progress: bool
) -> Path:
    axis, shape, tile = _slice_settings(options)
    shape_mode = options.resolved_shape_mode(3)
    records = [c for s in sources for c in s.cases]
    declared = _declared_labels(sources, options)
    modality = _resolve_modality(sources, options)
    intensity_mode = options.intensity or ("window" if modality.upper() == "CT" else "percentile")
    window = options.resolved_window()
    volume_groups = group_keys([r.id for r in records], [r.group for r in records], options.group_regex)
    tally = CheckTally(len(records), split_problems(
        len(set(volume_groups.values())), len(records), options.test_fraction, options.val_fraction, options.folds
    ))
    entries: list[dict] = []
    no_slices: list[str] = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "cases").mkdir()
        bar = tqdm(records, desc="prepare", unit="volume", disable=not progress or None, leave=False)
        for case in checked_cases(bar, tally, set(declared) if declared else None, options.crop_to_image):
            rec = case.record
            assert case.image is not None and case.mask is not None and case.affine is not None
            lo, hi = intensity_range(case.image, intensity_mode, window, options.percentiles)
            volume = prepare_volume(case.image, case.mask, case.affine, lo=lo, hi=hi, spacing=options.spacing,
                                    axis=axis, margin=options.margin)
            indices = select_slices(volume.mask, axis, options.foreground_slices_only,
                                    None if tile else options.max_slices)
            if not indices:
                no_slices.append(rec.id)
                continue
            base = {
                "source": rec.source,
                "group": volume_groups[rec.id],
                "volume_id": rec.id,
                "image_file": str(rec.image),
                "label_file": str(rec.label),
                "original_shape": list(case.image.shape),
                "original_spacing": [float(s) for s in case.spacing],
                "original_affine": case.affine.tolist(),
                "shape": list(shape),
                "affine": None,
                "intensity": {"lo": float(lo), "hi": float(hi)},
                "label_voxels": {},
                "fixes": case.fixes + volume.notes,
            }
            if tile is not None:
                assert options.mosaic is not None
                image, mask, used, spacing, lost = mosaic_of_volume(volume, axis, indices, options.mosaic, tile,
                                                                    shape_mode)
                entries.append(_slice_entry(tmp, rec.id, base, image, mask, spacing, lost, slice_indices=used))
                continue
            width = max(3, len(str(volume.mask.shape[axis] - 1)))
            for s in slices_of_volume(volume, axis, indices, shape, shape_mode):
                f = s.fitted
                entries.append(_slice_entry(tmp, f"{rec.id}_slice{s.index:0{width}d}", base, f.image, f.mask,
                                            f.spacing, f.foreground_lost, slice_index=s.index))
        bar.close()
        tally.raise_if_any()
        if no_slices:
            log.warning("%d volume(s) gave no slice (no labelled voxel): %s", len(no_slices), ", ".join(no_slices[:10]))
        if not entries:
            raise UserError("no slices were taken (every volume has an empty mask and --foreground-slices-only is on)")
        preprocessing = {
            "dims": 2,
            "input": "mosaic" if tile else "slices",
            "shape": list(shape),
            "shape_mode": shape_mode,
            "channels": 1,
            "bit_depth": BIT_DEPTH_SLICES,
            "spacing": None,
            "spacing_unit": "mm",
            "modality": modality,
            "intensity": intensity_entry(intensity_mode, window, options.percentiles, entries),
            "slicing": {
                "axis": options.slices or "axial",
                "ras_axis": axis,
                "orientation": "RAS",
                "volume_spacing": None if options.spacing is None else [float(s) for s in options.spacing],
                "foreground_margin": options.margin,
                "foreground_slices_only": options.foreground_slices_only,
                "max_slices": options.max_slices,
                "mosaic": None if tile is None else {
                    "rows": options.mosaic[0], "cols": options.mosaic[1], "tile": list(tile),  # type: ignore[index]
                },
            },
        }
        splits = write_manifest(tmp, sources, entries, declared, tally.labels_seen, options, preprocessing)
    what = f"{'mosaics' if tile else 'slices'} ({preprocessing['slicing']['axis']}) of {len(records)} volumes"
    return _report(out, sources, entries, splits, what)


def _slice_entry(
    tmp: Path, case_id: str, base: dict, image: np.ndarray, mask: np.ndarray, spacing: list[float], lost: int,
    **where,
) -> dict:
    entry = {"id": case_id, **base, **where, "spacing": [float(s) for s in spacing], "foreground_lost_voxels": lost}
    entry["cache"] = _save_case(tmp, case_id, image, mask)
    entry["_counts"] = _label_counts(mask)
    return entry
