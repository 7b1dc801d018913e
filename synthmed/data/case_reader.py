"""The plug-in contract of `prepare.prepare_dataset`: a `CaseReader` per kind of input.

`prepare_dataset` owns what every kind shares: grouping and the split check, the per-case check loop
(`checks.checked_cases` with a `checks.CheckTally`), the atomic output folder, each case's npz file and
manifest entry, the empty-mask warning, ``manifest.json`` and the printed summary. A reader owns what
differs: its options, how one input pair is read and checked, what prepared case(s) it gives, the
warnings and problems found over all cases, and the manifest's ``preprocessing``. The readers are
`volume_reader.VolumeReader` (3D volumes), `image_reader.ImageReader` (2D images) and
`slice_reader.SliceReader` (2D slices or slice mosaics of 3D volumes).

This module also holds what the readers share: the declared labels and modality of the sources, and
the manifest's intensity entry.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.checks import CheckedPair
from synthmed.data.discover import CaseRecord, Source
from synthmed.data.prepare_options import PrepareOptions
from synthmed.errors import UserError, format_problems

log = logging.getLogger(__name__)


@dataclass
class PreparedCase:
    """One output case: ``cases/<id>.npz`` holds `image` and `mask`; `fields` go into its manifest entry."""

    id: str
    image: np.ndarray  # float32 [C,*S] in [-1, 1]
    mask: np.ndarray  # uint8 [*S]
    # the manifest entry after id, source and group and before cache, in manifest order; it holds an
    # empty "label_voxels" where the counts go once the labels are known
    fields: dict[str, Any]
    empty: bool  # no labelled voxel (3D: in the input mask; 2D: in the case)


@dataclass
class SummaryText:
    """A reader's parts of the printed summary."""

    cases: str  # what was prepared, e.g. "cases" or "2D cases (images, 32x32 resize)"
    details: str  # the sentences after the split, up to the manifest path


class CaseReader(ABC):
    """One kind of input, as `prepare_dataset` uses it: check a pair, prepare it, describe the result."""

    unit: str = "case"  # what one input pair is, in the progress bar
    element: str = "voxel"  # "voxel" or "pixel", in the empty-mask warning
    declared: dict[int, str] | None  # declared labels; None: name those seen

    @abstractmethod
    def check(self, record: CaseRecord) -> CheckedPair:
        """Read and check one input pair; problems are listed in the result, never raised."""

    @abstractmethod
    def prepare(self, pair: Any) -> list[PreparedCase]:
        """The prepared case(s) of a pair that passed `check` (none when the output will be discarded)."""

    def dataset_problems(self) -> list[str]:
        """Problems found over all the pairs checked (e.g. mixed pixel types); [] when none."""
        return []

    @abstractmethod
    def finish(self, tmp: Path, entries: list[dict]) -> dict:
        """Warn about what the prepared cases show, complete their files in `tmp` where the whole dataset
        decides (e.g. grayscale repeated over RGB) and return the manifest's ``preprocessing``.

        Raises:
            UserError: the cases cannot make a dataset (e.g. no slice was taken).
        """

    @abstractmethod
    def summary(self, n_empty: int) -> SummaryText:
        """The reader's parts of the printed summary, given the number of empty masks."""


def declared_labels(sources: list[Source], options: PrepareOptions) -> dict[int, str] | None:
    """The labels given by ``options.labels`` (unnamed ones take the sources' names), else those the
    sources declare; None when neither declares any (the labels seen are then used).

    Raises:
        UserError: two sources give one label different names (and ``options.labels`` is not set).
    """
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


RARE_LABEL_CASE_FRACTION = 0.01  # an undeclared label value in fewer cases than this share ...
RARE_LABEL_ELEMENTS = 10  # ... or on fewer voxels/pixels than this, in all, is likely noise


def warn_rare_labels(ids: list[str], label_counts: list[np.ndarray], element: str) -> list[int]:
    """Warn (one line) about label values so rare that they look like noise rather than a class.

    Only for undeclared labels, where every value seen becomes a class: a value in fewer than 1% of
    the cases or on fewer than 10 voxels in all is named with its voxels and cases.

    Args:
        ids: case ids; label_counts: per case, the voxels of each value 0..255; element: "voxel" or "pixel".

    Returns:
        The rare values (empty when none).
    """
    if not label_counts:
        return []
    counts = np.stack(label_counts)
    rare, described = [], []
    for value in np.flatnonzero(counts[:, 1:].sum(0)) + 1:
        cases = np.flatnonzero(counts[:, value])
        total = int(counts[:, value].sum())
        if len(cases) < RARE_LABEL_CASE_FRACTION * len(ids) or total < RARE_LABEL_ELEMENTS:
            rare.append(int(value))
            names = ", ".join(ids[i] for i in cases[:3]) + (", ..." if len(cases) > 3 else "")
            described.append(f"{value} ({total} {element}s in {len(cases)} of {len(ids)} cases: {names})")
    if rare:
        log.warning(
            "no labels declared, so every mask value is a class, and %d value(s) are rare enough to be noise: %s; "
            "check those masks, or pass --labels to declare the classes (other values are then refused)",
            len(rare), "; ".join(described),
        )
    return rare


def volume_modality(sources: list[Source], options: PrepareOptions) -> str:
    """The modality of 3D volumes: ``options.modality``, else the one the sources declare, else CT.

    Raises:
        UserError: the sources declare different modalities (and ``options.modality`` is not set).
    """
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


def shape_2d(options: PrepareOptions, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """``options.shape`` as (H, W), else `default`.

    Raises:
        UserError: the shape does not have 2 numbers.
    """
    shape = options.shape or default
    if shape is not None and len(shape) != 2:
        raise UserError(f"--shape {' '.join(map(str, shape))}: 2D cases need 2 numbers (H W)")
    return None if shape is None else (int(shape[0]), int(shape[1]))


def raw_files(record: CaseRecord) -> dict[str, str]:
    """The manifest fields naming the input pair of a case."""
    return {"image_file": str(record.image), "label_file": str(record.label)}
