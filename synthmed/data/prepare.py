"""`synthmed prepare`: raw datasets -> checked, preprocessed cache + split manifest.

`prepare_dataset(inputs, out, options)` discovers the cases (see `discover`), checks every case
(see `checks`; all problems are collected and raised as one `UserError`), preprocesses each (see
`preprocess`), writes ``OUT/cases/<id>.npz`` and ``OUT/manifest.json`` (see `manifest`) with a
seeded, group-aware split (see `splits`). The output folder appears only when everything
succeeded; an existing one is refused unless ``overwrite=True``.
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
from synthmed.data.checks import load_checked_case
from synthmed.data.discover import CaseRecord, Source, discover_sources
from synthmed.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION
from synthmed.data.preprocess import preprocess_case
from synthmed.data.splits import group_keys, make_splits, split_problems
from synthmed.errors import UserError, format_problems, validation_problems
from synthmed.fileio import atomic_directory, atomic_write_json

log = logging.getLogger(__name__)


class PrepareOptions(BaseModel):
    """Options of `synthmed prepare` (the CLI flags of the same names)."""

    model_config = ConfigDict(extra="forbid")

    spacing: tuple[float, float, float] | None = None  # target voxel size in mm; None keeps it
    shape: tuple[int, int, int] = (64, 64, 64)  # target [D,H,W] in voxels
    shape_mode: Literal["pad_crop", "resize"] = "pad_crop"  # centred pad/crop, or resize
    intensity: Literal["window", "percentile"] | None = None  # None: window for CT, else percentile
    window: tuple[float, float] = (-1024.0, 600.0)  # raw values mapped to -1 and 1 (window mode)
    percentiles: tuple[float, float] = (0.5, 99.5)  # per-case percentiles mapped to -1 and 1
    margin: int = Field(4, ge=0)  # voxels kept around the mask in the foreground crop
    modality: str | None = None  # None: dataset.json's modality, else "CT"
    labels: dict[int, str] | None = None  # declared labels; None: dataset.json's, else those seen
    test_fraction: float = Field(0.2, ge=0, lt=1)  # fraction of cases held out for testing
    val_fraction: float = Field(0.1, ge=0, lt=1)  # fraction of cases for validation
    folds: int = Field(5, ge=0)  # k folds of the training cases (0: none)
    group_regex: str | None = None  # first capture group on the case id = group key
    seed: int = 0  # seed of the split
    crop_to_image: bool = False  # crop masks exceeding their image by <= 1 voxel per axis

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, v):
        if v is not None and min(v) <= 0:
            raise ValueError(f"spacing must be positive, got {list(v)}")
        return v

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, v):
        if min(v) < 1:
            raise ValueError(f"shape must be positive, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _ranges(self):
        if not self.window[1] > self.window[0]:
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
        return self


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
    return found[0] if found else "CT"


def prepare_dataset(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Check, preprocess and split the datasets in `inputs`, writing the prepared folder `out`.

    Args:
        inputs: dataset folders (MSD/nnU-Net or images/ + labels/) or datalist JSON files.
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
    records: list[CaseRecord] = [c for s in sources for c in s.cases]
    declared = _declared_labels(sources, options)
    modality = _resolve_modality(sources, options)
    intensity_mode = options.intensity or ("window" if modality.upper() == "CT" else "percentile")
    if options.intensity is None:
        log.info("intensity mode %s (modality %s)", intensity_mode, modality)

    groups = group_keys([r.id for r in records], [r.group for r in records], options.group_regex)
    problems = split_problems(
        len(set(groups.values())), len(records), options.test_fraction, options.val_fraction, options.folds
    )

    entries: list[dict] = []
    labels_seen: set[int] = set()
    empty: list[str] = []
    lost: dict[str, int] = {}
    spacings: set[tuple[float, ...]] = set()
    n_failed = 0
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "cases").mkdir()
        bar = tqdm(records, desc="prepare", unit="case", disable=not progress or None, leave=False)
        for rec in bar:
            case = load_checked_case(rec, set(declared) if declared else None, options.crop_to_image)
            if case.problems:
                problems += case.problems
                n_failed += 1
                continue
            labels_seen |= case.labels_seen
            if problems:  # output will be discarded: only check the remaining cases
                continue
            assert case.image is not None and case.mask is not None and case.affine is not None
            spacings.add(tuple(np.round(case.spacing, 3)))
            pre = preprocess_case(
                case.image,
                case.mask,
                case.affine,
                spacing=options.spacing,
                shape=options.shape,
                shape_mode=options.shape_mode,
                intensity_mode=intensity_mode,
                window=options.window,
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
        if problems:
            title = (
                f"{n_failed} of {len(records)} cases failed the checks; nothing was written"
                if n_failed
                else "Cannot prepare the dataset; nothing was written"
            )
            raise UserError(format_problems(title, problems))

        if declared is None:
            declared = {k: ("background" if k == 0 else f"label_{k}") for k in sorted(labels_seen | {0})}
            log.info("no labels declared; using the labels seen: %s", sorted(declared))
        for e in entries:
            counts = e.pop("_counts")
            e["label_voxels"] = {str(k): int(counts[k]) for k in declared if k != 0}
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
                len(lost), len(records), "x".join(map(str, options.shape)), sum(lost.values()),
                worst, lost[worst],
            )
        if options.spacing is None and len(spacings) > 1:
            log.warning(
                "cases have %d different voxel spacings and --spacing is none: they are kept as they are",
                len(spacings),
            )

        splits = make_splits(
            groups, options.seed, options.test_fraction, options.val_fraction, options.folds, options.group_regex
        )
        if intensity_mode == "window":
            intensity = {"mode": "window", "lo": float(options.window[0]), "hi": float(options.window[1])}
        else:
            intensity = {
                "mode": "percentile",
                "lower_pct": float(options.percentiles[0]),
                "upper_pct": float(options.percentiles[1]),
                "reference_lo": float(np.median([e["intensity"]["lo"] for e in entries])),
                "reference_hi": float(np.median([e["intensity"]["hi"] for e in entries])),
            }
        manifest = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "synthmed_version": synthmed.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": [{"name": s.name, "path": str(s.path), "kind": s.kind} for s in sources],
            "labels": {str(k): v for k, v in sorted(declared.items())},
            "preprocessing": {
                "orientation": "RAS",
                "spacing": None if options.spacing is None else [float(s) for s in options.spacing],
                "shape": list(options.shape),
                "shape_mode": options.shape_mode,
                "foreground_margin": options.margin,
                "modality": modality,
                "intensity": intensity,
            },
            "cases": entries,
            "splits": splits,
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)

    path = out / MANIFEST_NAME
    n_folds = len(splits["folds"])
    print(
        f"Prepared {len(entries)} cases from {len(sources)} source(s) "
        f"({', '.join(s.name for s in sources)}) into {out}: train {len(splits['train'])}, "
        f"val {len(splits['val'])}, test {len(splits['test'])}"
        + (f", {n_folds} folds of the train cases" if n_folds else "")
        + f" (seed {options.seed}). Shape {'x'.join(map(str, options.shape))} ({options.shape_mode}), "
        f"spacing {'kept' if options.spacing is None else 'x'.join(f'{s:g}' for s in options.spacing) + ' mm'}, intensity {intensity_mode}. "
        f"{len(empty)} empty mask(s); {len(lost)} case(s) lost labelled voxels to the crop. "
        f"Manifest: {path}"
    )
    return path
