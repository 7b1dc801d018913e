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

from synthmed.data.discover import CaseRecord, strip_nifti_suffix
from synthmed.data.volume_io import read_itk_volume
from synthmed.errors import UserError, format_problems

AFFINE_TOLERANCE_MM = 1e-3  # largest difference between image and mask affine entries
MAX_MASK_LABEL = 255  # masks are stored as uint8


@dataclass
class LoadedCase:
    """The arrays of one case, read and checked; `image`/`mask` are None when unusable."""

    record: CaseRecord
    image: np.ndarray | None = None  # float32 [D,H,W] (one channel) or [C,D,H,W], raw units
    mask: np.ndarray | None = None  # int64 [D,H,W]
    affine: np.ndarray | None = None  # 4x4 image affine
    spacing: tuple[float, float, float] | None = None  # image voxel size in mm
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    labels_seen: set[int] = field(default_factory=set)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def read_nifti(
    path: Path, problems: list[str], channels: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """(data as stored, affine, zooms) of a 3D NIfTI, or None with a problem appended.

    With `channels`, a 4D NIfTI (MSD Task01: channels on the last axis; also ``X,Y,Z,1,C``) is read as
    ``[C, D, H, W]``. A truncated ``.nii.gz`` only fails when its data is read, so the data is read here.
    """
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel, gzip, zlib and OS errors: all mean "cannot read this file"
        problems.append(f"{path}: unreadable or truncated NIfTI ({type(e).__name__}: {e})")
        return None
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI's 5th dimension holds vector components
        data = data[:, :, :, 0, :]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if channels and data.ndim == 4:
        data = np.moveaxis(data, 3, 0)
    elif data.ndim != 3:
        problems.append(f"{path}: expected a 3D volume, found shape {_shape(data.shape)}")
        return None
    return data, np.asarray(img.affine, dtype=np.float64), tuple(float(z) for z in img.header.get_zooms()[:3])


def read_volume(path: Path, problems: list[str]) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """(data, RAS affine, voxel size) of a 3D volume, or None with a problem appended: NIfTI through
    nibabel (`read_nifti`); NRRD, MetaImage and DICOM series folders through SimpleITK."""
    if not path.is_dir() and strip_nifti_suffix(path.name) is not None:
        return read_nifti(path, problems)
    return read_itk_volume(path, problems)


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
    msk = read_volume(record.label, case.problems)
    img = read_image_channels(record, msk, case.problems)
    if img is None or msk is None:
        return case
    image_raw, affine, zooms = img
    msk = mask_on_image_axes(case, msk, affine)
    mask_raw = _mask_matching_image(case, image_raw.shape[-3:], msk[0], crop_to_image)
    _check_affines(case, affine, msk[1])
    image = np.asarray(image_raw, dtype=np.float32)
    _check_finite(case, image)
    labels = _mask_labels(case, mask_raw)
    if labels is None:
        return case
    case.labels_seen = labels
    _check_declared(case, declared_labels)
    if case.problems:
        return case
    case.image = image
    case.mask = np.asarray(mask_raw).astype(np.int64)
    case.affine = affine
    case.spacing = zooms  # type: ignore[assignment]
    return case


def read_image_channels(
    record: CaseRecord, mask: tuple[np.ndarray, np.ndarray, tuple] | None, problems: list[str]
) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """(data, affine, zooms) of a case's image: ``[D,H,W]`` for one channel, ``[C,D,H,W]`` for a 4D
    NIfTI or several channel files (`CaseRecord.channel_files`), or None with a problem appended.

    Every channel file after the first must have the mask's shape and affine (the first is checked
    with the mask by the caller); a problem names the file otherwise.
    """
    if not record.channel_files:
        if record.image.is_file() and strip_nifti_suffix(record.image.name) is not None:
            return read_nifti(record.image, problems, channels=True)
        return read_volume(record.image, problems)
    reads = [read_volume(p, problems) for p in record.channel_files]
    if any(r is None for r in reads):
        return None
    n_before = len(problems)
    for c, (path, (data, affine, _)) in enumerate(zip(record.channel_files, reads)):
        if c == 0 or mask is None:
            continue
        if data.shape != mask[0].shape:
            problems.append(f"{path}: channel {c} has shape {_shape(data.shape)}, its mask {record.label.name} "
                            f"{_shape(mask[0].shape)} (every channel needs the mask's geometry)")
        elif not np.allclose(affine, mask[1], rtol=0, atol=AFFINE_TOLERANCE_MM):
            problems.append(f"{path}: channel {c} affine differs from its mask's ({record.label.name}) by up to "
                            f"{float(np.abs(affine - mask[1]).max()):.4g} mm (tolerance {AFFINE_TOLERANCE_MM} mm)")
    if len(problems) > n_before:
        return None
    return np.stack([r[0] for r in reads]), reads[0][1], reads[0][2]  # type: ignore[index]


def mask_on_image_axes(case: LoadedCase, mask: tuple, image_affine: np.ndarray) -> tuple:
    """The mask (data, affine, zooms) with its array axes flipped/permuted to the image's when it lies on
    the same grid stored in another axis order (a DICOM series, always right-handed, with a NIfTI mask
    stored left-handed); the fix is recorded. Any other mask is returned as it is, for the checks."""
    data, affine, zooms = mask
    if np.allclose(affine, image_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        return mask
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.io_orientation(image_affine)
    )
    moved_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    if not np.allclose(moved_affine, image_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        return mask
    case.fixes.append("mask axes reordered to the image's (the same grid, stored in another axis order)")
    moved = nib.orientations.apply_orientation(np.asarray(data), transform)
    return moved, moved_affine, tuple(np.linalg.norm(moved_affine[:3, :3], axis=0))


def _mask_matching_image(case: LoadedCase, image_shape: tuple, mask_raw: np.ndarray, crop_to_image: bool) -> np.ndarray:
    """The mask, cropped when it exceeds the image by one voxel and `crop_to_image`; a problem otherwise."""
    if image_shape == mask_raw.shape:
        return mask_raw
    record = case.record
    excess = [m - i for m, i in zip(mask_raw.shape, image_shape)]
    one_voxel = all(0 <= e <= 1 for e in excess)
    if one_voxel and crop_to_image:
        d, h, w = image_shape
        lost = int(np.count_nonzero(mask_raw[d:, ...]) + np.count_nonzero(mask_raw[:d, h:, :])
                    + np.count_nonzero(mask_raw[:d, :h, w:]))
        case.fixes.append(
            f"mask cropped to image ({_shape(mask_raw.shape)} -> {_shape(image_shape)}, "
            f"{lost} labelled voxels removed)"
        )
        return mask_raw[:d, :h, :w]
    hint = " (the mask exceeds the image by at most one voxel per axis: pass --crop-to-image to crop it)" if one_voxel else ""
    case.problems.append(
        f"{record.label}: mask shape {_shape(mask_raw.shape)} differs from image shape "
        f"{_shape(image_shape)} ({record.image.name}){hint}"
    )
    return mask_raw


def _check_affines(case: LoadedCase, affine: np.ndarray, mask_affine: np.ndarray) -> None:
    if not np.allclose(affine, mask_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        diff = float(np.abs(affine - mask_affine).max())
        case.problems.append(
            f"{case.record.label}: mask affine differs from image affine by up to {diff:.4g} mm "
            f"(tolerance {AFFINE_TOLERANCE_MM} mm); expected\n      {np.round(affine, 4).tolist()}\n"
            f"      found {np.round(mask_affine, 4).tolist()}"
        )


def _check_finite(case: LoadedCase, image: np.ndarray) -> None:
    if not np.isfinite(image).all():
        case.problems.append(
            f"{case.record.image}: {int(np.isnan(image).sum())} NaN and {int(np.isinf(image).sum())} Inf "
            f"voxels (expected none)"
        )


def _mask_labels(case: LoadedCase, mask_raw: np.ndarray) -> set[int] | None:
    """The integer label values of a mask; None (with a problem) for NaN/Inf or non-integer values."""
    if np.issubdtype(mask_raw.dtype, np.integer):
        return {int(v) for v in np.unique(mask_raw)}
    mask_f = np.asarray(mask_raw, dtype=np.float64)
    if not np.isfinite(mask_f).all():
        case.problems.append(f"{case.record.label}: mask has NaN or Inf voxels (expected integer labels)")
        return None
    values = np.unique(mask_f)
    non_int = values[values != np.round(values)]
    if non_int.size:
        case.problems.append(
            f"{case.record.label}: mask has non-integer values {non_int[:5].tolist()} "
            f"(expected integer labels; was it resampled with linear interpolation?)"
        )
        return None
    return {int(v) for v in values}


def _check_declared(case: LoadedCase, declared_labels: set[int] | None) -> None:
    allowed = declared_labels if declared_labels is not None else set(range(MAX_MASK_LABEL + 1))
    unknown = sorted(case.labels_seen - allowed)
    if unknown:
        expected = sorted(declared_labels) if declared_labels is not None else f"0..{MAX_MASK_LABEL}"
        case.problems.append(f"{case.record.label}: label values {unknown} outside the declared labels {expected}")


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
