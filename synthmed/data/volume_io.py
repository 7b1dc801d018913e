"""Read 3D volumes that are not NIfTI, through SimpleITK: NRRD (``.nrrd``, ``.nhdr``), MetaImage
(``.mha``, ``.mhd``) and DICOM series (one folder per series).

Every reader returns what `checks.read_nifti` returns for a NIfTI file: the data indexed like
nibabel's (i, j, k) array, the 4x4 voxel-to-world affine in RAS+ mm (NIfTI's convention) and the voxel
size. SimpleITK's world is LPS+, so the affine is ``diag(-1, -1, 1) @ [direction @ diag(spacing) | origin]``.

A DICOM folder is checked before it is read, because SimpleITK reads a broken series without a word:
it must hold exactly one series (one SeriesInstanceUID), of one orientation, with at least two
slices at distinct positions, equally spaced along the slice normal. A gap that is a whole multiple
of the usual step is reported as missing slices; any other uneven gap as inconsistent slice spacing.
"""

from __future__ import annotations

import contextlib
import locale
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")  # compared in lower case
DICOM_SUFFIXES = (".dcm", ".ima")  # DICOM files also often have no suffix at all
SLICE_GAP_TOLERANCE = 0.01  # largest relative difference between slice gaps (1 %, at least 0.01 mm)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def strip_itk_suffix(name: str) -> str | None:
    """`case.nrrd` -> `case` (any letter case); None when the name is not an NRRD/MetaImage file name."""
    lower = name.lower()
    for suffix in ITK_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix or not path.is_file():
        return False
    with path.open("rb") as f:  # a DICOM file holds "DICM" after its 128-byte preamble
        return f.read(132)[128:] == b"DICM"


def is_dicom_folder(path: Path) -> bool:
    """True when `path` is a folder holding DICOM files (``.dcm``/``.ima``, or suffix-less with the DICM tag)."""
    return path.is_dir() and any(_is_dicom_file(p) for p in path.iterdir() if not p.name.startswith("."))


def itk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS+ voxel-to-world 4x4 affine of a 3D SimpleITK image, for its array transposed to (i, j, k)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return affine


@contextlib.contextmanager
def process_locale_kept() -> Iterator[None]:
    """Restore the process locale after SimpleITK: GDCM sets LC_ALL to "C", which would turn every later
    ``Path.read_text()`` without an encoding into ASCII."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def read_itk_volume(path: Path, problems: list[str]) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """(data [i,j,k], RAS affine, voxel size) of an NRRD/MetaImage file or a DICOM series folder, or None
    with a problem appended (unreadable, not 3D, several components, or a broken DICOM series)."""
    try:
        with process_locale_kept():
            image = read_dicom_series(path, problems) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as e:  # SimpleITK raises RuntimeError for unreadable and truncated files
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        problems.append(f"{path}: unreadable or truncated volume ({first})")
        return None
    if image is None:
        return None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        size = "x".join(map(str, image.GetSize()))
        problems.append(
            f"{path}: expected a 3D volume of one component, found size {size} with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel"
        )
        return None
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # SimpleITK arrays are [k, j, i]
    return data, itk_affine(image), tuple(float(s) for s in image.GetSpacing())


def read_dicom_series(folder: Path, problems: list[str]) -> sitk.Image | None:
    """The one DICOM series in `folder`, read after `dicom_series_problems` found nothing wrong; else None."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        problems.append(f"{folder}: no DICOM series found (one folder per series of .dcm files expected)")
        return None
    if len(series) > 1:
        shown = ", ".join(series[:3]) + (" ..." if len(series) > 3 else "")
        problems.append(
            f"{folder}: holds {len(series)} DICOM series (SeriesInstanceUID {shown}); put each series in "
            f"its own folder"
        )
        return None
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    found = dicom_series_problems(folder, files)
    if found:
        problems += found
        return None
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _slice_geometry(files: list[str]) -> tuple[list[tuple[float, ...]], list[np.ndarray]]:
    """(ImageOrientationPatient, ImagePositionPatient) of each file, from its header only."""
    orientations, positions = [], []
    reader = sitk.ImageFileReader()
    for name in files:
        reader.SetFileName(name)
        reader.ReadImageInformation()
        orientations.append(tuple(round(float(v), 4) for v in reader.GetMetaData("0020|0037").split("\\")))
        positions.append(np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")]))
    return orientations, positions


def dicom_series_problems(folder: Path, files: list[str]) -> list[str]:
    """What is wrong with the slices `files` of one series (see the module docstring); [] when nothing."""
    if len(files) < 2:
        return [f"{folder}: DICOM series of {len(files)} slice(s); a 3D volume needs at least 2"]
    try:
        orientations, positions = _slice_geometry(files)
    except (RuntimeError, ValueError) as e:
        return [f"{folder}: DICOM slices without a readable position/orientation (0020,0032/0037): {e}"]
    if len(set(orientations)) > 1:
        return [f"{folder}: DICOM slices of {len(set(orientations))} different orientations in one series"]
    row, col = np.reshape(orientations[0], (2, 3))
    along = np.sort([float(p @ np.cross(row, col)) for p in positions])
    gaps = np.diff(along)
    if gaps.min() < 1e-3:
        return [f"{folder}: {int((gaps < 1e-3).sum()) + 1} DICOM slices share a position (duplicates, or two "
                f"acquisitions in one series)"]
    step = float(np.median(gaps))
    uneven = np.abs(gaps - step) > max(SLICE_GAP_TOLERANCE * step, 0.01)
    if not uneven.any():
        return []
    multiples = gaps[uneven] / step
    if np.allclose(multiples, np.round(multiples), atol=SLICE_GAP_TOLERANCE * 10) and (multiples > 1.5).all():
        missing = int(np.round(multiples).sum() - len(multiples))
        at = along[1:][uneven][0]
        return [f"{folder}: {missing} missing DICOM slice(s) in {len(files)} (a gap of "
                f"{gaps[uneven][0]:.4g} mm before the slice at {at:.4g} mm; slice spacing {step:.4g} mm)"]
    return [f"{folder}: inconsistent DICOM slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
            f"between the {len(files)} slices (expected equal gaps)"]
