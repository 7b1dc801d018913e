"""Read one raw case and check it, reporting problems instead of fixing them.

`load_checked_case` reads an image/mask pair and returns the arrays plus a list of problems (each
names the file and gives expected against found). The only fix it makes is the one the user asked
for: with ``crop_to_image=True`` a mask larger than its image by at most one voxel per axis is
cropped, and the fix is recorded.

The caller collects the problems of every case and raises one `UserError`: `checked_cases` runs a
check (`load_checked_case`, or `images2d.check_image_pair` for 2D images) over a dataset and collects
the problems in a `CheckTally`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import nibabel as nib
import numpy as np

from synthmed.data.discover import CaseRecord
from synthmed.errors import UserError, format_problems

AFFINE_TOLERANCE_MM = 1e-3  # largest difference between image and mask affine entries
MAX_MASK_LABEL = 255  # masks are stored as uint8


@dataclass
class LoadedCase:
    """The arrays of one case, read and checked; `image`/`mask` are None when unusable."""

    record: CaseRecord
    image: np.ndarray | None = None  # float32 [D,H,W], raw units
    mask: np.ndarray | None = None  # int64 [D,H,W]
    affine: np.ndarray | None = None  # 4x4 image affine
    spacing: tuple[float, float, float] | None = None  # image voxel size in mm
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    labels_seen: set[int] = field(default_factory=set)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def read_nifti(path: Path, problems: list[str]) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """(data as stored, affine, zooms) of a 3D NIfTI, or None with a problem appended.

    A truncated ``.nii.gz`` only fails when its data is read, so the data is read here.
    """
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel, gzip, zlib and OS errors: all mean "cannot read this file"
        problems.append(f"{path}: unreadable or truncated NIfTI ({type(e).__name__}: {e})")
        return None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        problems.append(f"{path}: expected a 3D volume, found shape {_shape(data.shape)}")
        return None
    return data, np.asarray(img.affine, dtype=np.float64), tuple(float(z) for z in img.header.get_zooms()[:3])


def load_checked_case(
    record: CaseRecord, declared_labels: set[int] | None = None, crop_to_image: bool = False
) -> LoadedCase:
    """Read `record` and check it: readable, 3D, same shape and affine, finite, known integer labels.

    Args:
        record: the image/mask pair.
        declared_labels: allowed mask values; None accepts any non-negative integer up to 255.
        crop_to_image: crop a mask that exceeds the image by at most one voxel per axis.

    Returns:
        The case; when `problems` is non-empty, `image`/`mask` may be None and must not be used.
    """
    case = LoadedCase(record)
    problems = case.problems
    img = read_nifti(record.image, problems)
    msk = read_nifti(record.label, problems)
    if img is None or msk is None:
        return case
    image_raw, affine, zooms = img
    mask_raw, mask_affine, _ = msk

    if image_raw.shape != mask_raw.shape:
        excess = [m - i for m, i in zip(mask_raw.shape, image_raw.shape)]
        one_voxel = all(0 <= e <= 1 for e in excess)
        if one_voxel and crop_to_image:
            d, h, w = image_raw.shape
            lost = int(np.count_nonzero(mask_raw[d:, ...]) + np.count_nonzero(mask_raw[:d, h:, :])
                        + np.count_nonzero(mask_raw[:d, :h, w:]))
            mask_raw = mask_raw[:d, :h, :w]
            case.fixes.append(
                f"mask cropped to image ({_shape(msk[0].shape)} -> {_shape(image_raw.shape)}, "
                f"{lost} labelled voxels removed)"
            )
        else:
            hint = (
                " (the mask exceeds the image by at most one voxel per axis: pass --crop-to-image "
                "to crop it)"
                if one_voxel
                else ""
            )
            problems.append(
                f"{record.label}: mask shape {_shape(mask_raw.shape)} differs from image shape "
                f"{_shape(image_raw.shape)} ({record.image.name}){hint}"
            )
    if not np.allclose(affine, mask_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        diff = float(np.abs(affine - mask_affine).max())
        problems.append(
            f"{record.label}: mask affine differs from image affine by up to {diff:.4g} mm "
            f"(tolerance {AFFINE_TOLERANCE_MM} mm); expected\n      {np.round(affine, 4).tolist()}\n"
            f"      found {np.round(mask_affine, 4).tolist()}"
        )

    image = np.asarray(image_raw, dtype=np.float32)
    bad = ~np.isfinite(image)
    if bad.any():
        problems.append(
            f"{record.image}: {int(np.isnan(image).sum())} NaN and {int(np.isinf(image).sum())} Inf "
            f"voxels (expected none)"
        )

    if np.issubdtype(mask_raw.dtype, np.integer):
        values = np.unique(mask_raw)
    else:
        mask_f = np.asarray(mask_raw, dtype=np.float64)
        if not np.isfinite(mask_f).all():
            problems.append(f"{record.label}: mask has NaN or Inf voxels (expected integer labels)")
            return case
        values = np.unique(mask_f)
        non_int = values[values != np.round(values)]
        if non_int.size:
            problems.append(
                f"{record.label}: mask has non-integer values {non_int[:5].tolist()} "
                f"(expected integer labels; was it resampled with linear interpolation?)"
            )
            return case
    case.labels_seen = {int(v) for v in values}
    allowed = declared_labels if declared_labels is not None else set(range(MAX_MASK_LABEL + 1))
    unknown = sorted(case.labels_seen - allowed)
    if unknown:
        expected = sorted(declared_labels) if declared_labels is not None else f"0..{MAX_MASK_LABEL}"
        problems.append(f"{record.label}: label values {unknown} outside the declared labels {expected}")
    if problems:
        return case
    case.image = image
    case.mask = np.asarray(mask_raw).astype(np.int64)
    case.affine = affine
    case.spacing = zooms  # type: ignore[assignment]
    return case


@dataclass
class CheckTally:
    """What the per-case checks found over a dataset: every problem (one message lists them all), how
    many cases failed, and the labels seen in the cases that passed."""

    total: int  # cases checked
    problems: list[str] = field(default_factory=list)
    failed: int = 0
    labels_seen: set[int] = field(default_factory=set)

    def add_failure(self, problems: list[str]) -> None:
        self.problems += problems
        self.failed += 1

    def raise_if_any(self) -> None:
        """Raises: UserError listing every problem, when there is one (nothing is written then)."""
        if not self.problems:
            return
        title = (f"{self.failed} of {self.total} cases failed the checks; nothing was written" if self.failed
                 else "Cannot prepare the dataset; nothing was written")
        raise UserError(format_problems(title, self.problems))


class CheckedPair(Protocol):
    """One image/mask pair after its checks (e.g. `LoadedCase`): the problems found, and the labels of a
    pair that passed."""

    record: CaseRecord
    problems: list[str]
    labels_seen: set[int]


Checked = TypeVar("Checked", bound=CheckedPair)


def checked_cases(
    records: Iterable[CaseRecord], tally: CheckTally, check: Callable[[CaseRecord], Checked]
) -> Iterator[Checked]:
    """The pairs that pass `check`, while ``tally`` has no problem yet. Once one has, the output will be
    discarded, so the remaining records are only checked: one message then lists all."""
    for record in records:
        case = check(record)
        if case.problems:
            tally.add_failure(case.problems)
            continue
        tally.labels_seen |= case.labels_seen
        if not tally.problems:
            yield case
