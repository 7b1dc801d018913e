"""`synthmed prepare`: raw datasets -> checked, preprocessed cache + split manifest.

`prepare_dataset(inputs, out, options)` discovers the cases (see `discover`), checks every case
(see `checks`; all problems are collected and raised as one `UserError`), preprocesses each (see
`preprocess`), writes ``OUT/cases/<id>.npz`` and ``OUT/manifest.json`` (see `manifest`) with a
seeded, group-aware split (see `splits`). The output folder appears only when everything
succeeded; an existing one is refused unless ``overwrite=True``.

2D inputs (PNG/JPEG/TIFF, detected from the file types) and 2D slices or slice mosaics of 3D
volumes (``slices``/``mosaic`` options) go through `prepare2d`; 3D volumes are handled here.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

import synthmed
from synthmed.data.checks import CheckTally, checked_cases
from synthmed.data.discover import CaseRecord, Source, discover_sources
from synthmed.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION
from synthmed.data.preprocess import preprocess_case
from synthmed.data.splits import group_keys, make_splits, split_problems
from synthmed.errors import UserError, format_problems, validation_problems
from synthmed.fileio import atomic_directory, atomic_write_json

log = logging.getLogger(__name__)


DEFAULT_SHAPE_3D = (64, 64, 64)
DEFAULT_SHAPE_SLICES = (64, 64)
DEFAULT_CT_WINDOW = (-1024.0, 600.0)


class PrepareOptions(BaseModel):
    """Options of `synthmed prepare` (the CLI flags of the same names).

    Options that depend on the kind of input default to None and are resolved per kind: see
    `resolved_shape`, `resolved_shape_mode` and `resolved_window`.
    """

    model_config = ConfigDict(extra="forbid")

    spacing: tuple[float, float, float] | None = None  # target voxel size in mm (3D, slices); None keeps it
    # target [D,H,W] for 3D, [H,W] for 2D; None: 64³ for 3D and slices 64x64, for 2D images their
    # common size (refused when sizes differ)
    shape: tuple[int, ...] | None = None
    # 3D: pad_crop | resize; 2D: resize | pad_resize | pad_crop; None: pad_crop for 3D and slices,
    # resize for 2D images
    shape_mode: Literal["pad_crop", "resize", "pad_resize"] | None = None
    intensity: Literal["window", "percentile"] | None = None  # None: window for CT and 2D, else percentile
    # raw values mapped to -1 and 1 (window mode); None: -1024..600 for 3D, for 2D 0..255 (8-bit)
    # or the data's own min..max (16-bit and other pixel types)
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)  # per-case percentiles mapped to -1 and 1
    margin: int = Field(4, ge=0)  # voxels kept around the mask in the foreground crop
    modality: str | None = None  # None: dataset.json's modality, else "CT" (3D) or "image" (2D)
    labels: dict[int, str] | None = None  # declared labels; None: dataset.json's, else those seen
    test_fraction: float = Field(0.2, ge=0, lt=1)  # fraction of cases held out for testing
    val_fraction: float = Field(0.1, ge=0, lt=1)  # fraction of cases for validation
    folds: int = Field(5, ge=0)  # k folds of the training cases (0: none)
    group_regex: str | None = None  # first capture group on the case id (slices: volume id) = group key
    seed: int = 0  # seed of the split
    crop_to_image: bool = False  # crop masks exceeding their image by <= 1 voxel per axis
    # --- 2D ---
    channels: Literal[1, 3] | None = None  # image channels; None: 3 if any image has colour, else 1
    slices: Literal["axial", "coronal", "sagittal"] | None = None  # 2D cases from slices of 3D volumes
    mosaic: tuple[int, int] | None = None  # (rows, cols): one slice mosaic per volume instead
    foreground_slices_only: bool = False  # keep only slices holding labelled voxels
    max_slices: int | None = Field(None, ge=1)  # at most this many slices per volume (evenly spaced)

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, v):
        if v is not None and min(v) <= 0:
            raise ValueError(f"spacing must be positive, got {list(v)}")
        return v

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, v):
        if v is not None and (len(v) not in (2, 3) or min(v) < 1):
            raise ValueError(f"shape must be 3 (D H W) or 2 (H W) positive integers, got {list(v)}")
        return v

    @field_validator("mosaic")
    @classmethod
    def _positive_grid(cls, v):
        if v is not None and min(v) < 1:
            raise ValueError(f"mosaic needs rows and cols >= 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _ranges(self):
        if self.window is not None and not self.window[1] > self.window[0]:
            raise ValueError(f"window needs lo < hi, got {list(self.window)}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles need 0 <= lower < upper <= 100, got {[lo, hi]}")
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("test_fraction + val_fraction must be below 1")
        if self.folds == 1:
            raise ValueError("folds must be 0 (none) or at least 2")
        if self.labels is not None and 0 not in self.labels:
            raise ValueError("labels must include 0 (background)")
        if not self.slicing and (self.foreground_slices_only or self.max_slices is not None):
            raise ValueError("foreground_slices_only and max_slices need slices (or mosaic)")
        if self.mosaic is not None and self.max_slices is not None:
            raise ValueError("mosaic takes the central rows x cols slices; max_slices does not apply")
        return self

    @property
    def slicing(self) -> bool:
        """True when 2D cases are cut from 3D volumes (slices or mosaic)."""
        return self.slices is not None or self.mosaic is not None

    def resolved_shape_mode(self, dims: int) -> str:
        """The shape mode for inputs of `dims` (3: volumes or slices of volumes, 2: 2D images)."""
        if self.shape_mode is not None:
            return self.shape_mode
        return "resize" if dims == 2 and not self.slicing else "pad_crop"

    def resolved_window(self) -> tuple[float, float]:
        """The 3D window (CT default -1024..600 HU when none is given)."""
        return self.window if self.window is not None else DEFAULT_CT_WINDOW


def make_options(**kwargs) -> PrepareOptions:
    """`PrepareOptions(**kwargs)`, with validation errors turned into a `UserError` naming the key."""
    try:
        return PrepareOptions(**kwargs)
    except ValidationError as e:
        raise UserError(format_problems("Invalid prepare options", validation_problems(e))) from None


def _declared_labels(sources: list[Source], options: PrepareOptions) -> dict[int, str] | None:
    if options.labels is not None:
        named = {}
        for s in sources:
            named.update(s.labels or {})
        return {k: (v if not v.startswith("label_") else named.get(k, v)) for k, v in options.labels.items()}
    merged: dict[int, str] = {}
    problems = []
    for s in sources:
        for k, v in (s.labels or {}).items():
            if k in merged and merged[k] != v:
                problems.append(f"{s.path}: label {k} is named {v!r} here but {merged[k]!r} in another input")
            merged.setdefault(k, v)
    if problems:
        raise UserError(format_problems("Inputs declare conflicting labels (pass --labels)", problems))
    return dict(sorted(merged.items())) or None


def _resolve_modality(sources: list[Source], options: PrepareOptions) -> str:
    if options.modality:
        return options.modality
    found = sorted({s.modality for s in sources if s.modality})
    if len(found) > 1:
        raise UserError(f"inputs declare different modalities {found}; pass --modality")
    if not found:
        log.warning(
            "no modality given and no dataset.json declares one: assuming CT (intensity window %s); "
            "pass --modality MRI (or another) for non-CT data", list(options.resolved_window()),
        )
        return "CT"
    return found[0]


def _options_3d(options: PrepareOptions) -> tuple[tuple[int, int, int], str, tuple[float, float]]:
    """(shape, shape mode, window) for 3D volumes; refuses 2D-only options."""
    problems = []
    shape = options.shape or DEFAULT_SHAPE_3D
    if len(shape) != 3:
        problems.append(f"--shape {' '.join(map(str, shape))}: 3D volumes need 3 numbers (D H W)")
    shape_mode = options.resolved_shape_mode(3)
    if shape_mode == "pad_resize":
        problems.append("--shape-mode pad_resize is for 2D images; 3D volumes take pad_crop or resize")
    if options.channels is not None:
        problems.append("--channels is for 2D images; 3D volumes have one channel")
    if problems:
        raise UserError(format_problems("Invalid options for 3D volumes", problems))
    return tuple(shape), shape_mode, options.resolved_window()  # type: ignore[return-value]


def intensity_entry(
    mode: str, window: tuple[float, float], percentiles: tuple[float, float], entries: list[dict]
) -> dict:
    """The manifest's preprocessing.intensity: the window, or the percentiles and the median case range."""
    if mode == "window":
        return {"mode": "window", "lo": float(window[0]), "hi": float(window[1])}
    return {
        "mode": "percentile",
        "lower_pct": float(percentiles[0]),
        "upper_pct": float(percentiles[1]),
        "reference_lo": float(np.median([e["intensity"]["lo"] for e in entries])),
        "reference_hi": float(np.median([e["intensity"]["hi"] for e in entries])),
    }


def write_manifest(
    tmp: Path,
    sources: list[Source],
    entries: list[dict],
    declared: dict[int, str] | None,
    labels_seen: set[int],
    options: PrepareOptions,
    preprocessing: dict,
) -> dict:
    """Name the labels (those seen, when none were declared), count each case's labelled voxels, split the
    cases by group and write ``manifest.json`` into ``tmp``; return the splits."""
    if declared is None:
        declared = {k: ("background" if k == 0 else f"label_{k}") for k in sorted(labels_seen | {0})}
        log.info("no labels declared; using the labels seen: %s", sorted(declared))
    for e in entries:
        counts = e.pop("_counts")
        e["label_voxels"] = {str(k): int(counts[k]) for k in declared if k != 0}
    groups = {e["id"]: e["group"] for e in entries}
    splits = make_splits(
        groups, options.seed, options.test_fraction, options.val_fraction, options.folds, options.group_regex
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "synthmed_version": synthmed.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": [{"name": s.name, "path": str(s.path), "kind": s.kind} for s in sources],
        "labels": {str(k): v for k, v in sorted(declared.items())},
        "preprocessing": preprocessing,
        "cases": entries,
        "splits": splits,
    }
    atomic_write_json(tmp / MANIFEST_NAME, manifest)
    return splits


def prepare_dataset(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Check, preprocess and split the datasets in `inputs`, writing the prepared folder `out`.

    Args:
        inputs: dataset folders (MSD/nnU-Net or images/ + labels/ or masks/) or datalist JSON files,
            of 3D volumes or 2D images (see `discover`); 2D images, and slices of volumes, are
            prepared by `prepare2d.prepare_2d`.
        out: output folder; it appears only when everything succeeded.
        options: preprocessing and split options (defaults: `PrepareOptions()`).
        overwrite: replace an existing `out`.
        progress: show a progress bar over the cases.

    Returns:
        The path of ``out/manifest.json``.

    Raises:
        UserError: bad inputs (every problem of every case, listed at once) or options; `out` is
            then left untouched and no temporary folder remains.
    """
    options = options or PrepareOptions()
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise UserError(f"{out}: output folder already exists (pass --overwrite to replace it)")
    sources = discover_sources(list(inputs))
    dims = sources[0].dims
    if dims == 2 or options.slicing:
        from synthmed.data.prepare2d import prepare_2d  # prepare2d imports this module's helpers

        return prepare_2d(sources, out, options, overwrite=overwrite, progress=progress)
    shape, shape_mode, window = _options_3d(options)
    records: list[CaseRecord] = [c for s in sources for c in s.cases]
    declared = _declared_labels(sources, options)
    modality = _resolve_modality(sources, options)
    intensity_mode = options.intensity or ("window" if modality.upper() == "CT" else "percentile")
    if options.intensity is None:
        log.info("intensity mode %s (modality %s)", intensity_mode, modality)

    groups = group_keys([r.id for r in records], [r.group for r in records], options.group_regex)
    tally = CheckTally(len(records), split_problems(
        len(set(groups.values())), len(records), options.test_fraction, options.val_fraction, options.folds
    ))
    entries: list[dict] = []
    empty: list[str] = []
    lost: dict[str, int] = {}
    spacings: set[tuple[float, ...]] = set()
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "cases").mkdir()
        bar = tqdm(records, desc="prepare", unit="case", disable=not progress or None, leave=False)
        declared_labels = set(declared) if declared else None
        for case in checked_cases(bar, tally, declared_labels, options.crop_to_image):
            rec = case.record
            assert case.image is not None and case.mask is not None and case.affine is not None
            spacings.add(tuple(np.round(case.spacing, 3)))
            pre = preprocess_case(
                case.image,
                case.mask,
                case.affine,
                spacing=options.spacing,
                shape=shape,
                shape_mode=shape_mode,
                intensity_mode=intensity_mode,
                window=window,
                percentiles=options.percentiles,
                margin=options.margin,
            )
            if not (case.mask > 0).any():
                empty.append(rec.id)
            if pre.foreground_lost_voxels > 0:
                lost[rec.id] = pre.foreground_lost_voxels
            cache = f"cases/{rec.id}.npz"
            np.savez(tmp / cache, image=pre.image, mask=pre.mask)
            entries.append(
                {
                    "id": rec.id,
                    "source": rec.source,
                    "group": groups[rec.id],
                    "image_file": str(rec.image),
                    "label_file": str(rec.label),
                    "original_shape": list(case.image.shape),
                    "original_spacing": [float(s) for s in case.spacing],
                    "original_affine": case.affine.tolist(),
                    "shape": list(pre.mask.shape),
                    "spacing": pre.spacing,
                    "affine": pre.affine.tolist(),
                    "intensity": {"lo": pre.lo, "hi": pre.hi},
                    "label_voxels": {},  # filled in once the label set is known
                    "foreground_lost_voxels": pre.foreground_lost_voxels,
                    "fixes": case.fixes + pre.notes,
                    "cache": cache,
                    "_counts": np.bincount(pre.mask.ravel(), minlength=256),
                }
            )
        bar.close()
        tally.raise_if_any()

        if empty:
            log.warning(
                "%d of %d cases have an empty mask (no labelled voxel): %s",
                len(empty), len(records), ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""),
            )
        if lost:
            worst = max(lost, key=lost.get)  # type: ignore[arg-type]
            log.warning(
                "%d of %d cases lost labelled voxels to the crop to shape %s (%d voxels in all; most: "
                "%s, %d); use a larger --shape, a coarser --spacing or --shape-mode resize",
                len(lost), len(records), "x".join(map(str, shape)), sum(lost.values()),
                worst, lost[worst],
            )
        if options.spacing is None and len(spacings) > 1:
            log.warning(
                "cases have %d different voxel spacings and --spacing is none: they are kept as they are",
                len(spacings),
            )

        preprocessing = {
            "dims": 3,
            "orientation": "RAS",
            "spacing": None if options.spacing is None else [float(s) for s in options.spacing],
            "shape": list(shape),
            "shape_mode": shape_mode,
            "foreground_margin": options.margin,
            "modality": modality,
            "intensity": intensity_entry(intensity_mode, window, options.percentiles, entries),
        }
        splits = write_manifest(tmp, sources, entries, declared, tally.labels_seen, options, preprocessing)

    path = out / MANIFEST_NAME
    n_folds = len(splits["folds"])
    print(
        f"Prepared {len(entries)} cases from {len(sources)} source(s) "
        f"({', '.join(s.name for s in sources)}) into {out}: train {len(splits['train'])}, "
        f"val {len(splits['val'])}, test {len(splits['test'])}"
        + (f", {n_folds} folds of the train cases" if n_folds else "")
        + f" (seed {options.seed}). Shape {'x'.join(map(str, shape))} ({shape_mode}), "
        f"spacing {'kept' if options.spacing is None else 'x'.join(f'{s:g}' for s in options.spacing) + ' mm'}, intensity {intensity_mode}. "
        f"{len(empty)} empty mask(s); {len(lost)} case(s) lost labelled voxels to the crop. "
        f"Manifest: {path}"
    )
    return path
