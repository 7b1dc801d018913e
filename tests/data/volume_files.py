"""Write test volumes as NRRD, MetaImage or DICOM series from NIfTI files (through SimpleITK), and
break DICOM series in the ways real exports break: a missing slice, uneven spacing, two series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from synthmed.data.volume_io import process_locale_kept

UID_ROOT = "1.2.826.0.1.3680043.2.1125"  # an example UID root, as SimpleITK's own DICOM examples use


def nifti_to(nifti: Path, out: Path) -> Path:
    """The NIfTI volume `nifti` written to `out` (.nrrd, .nhdr, .mha, .mhd: the suffix picks the format)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # MetaImage warns about NIfTI header fields it drops
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(out))
    return out


def nifti_to_dicom(
    nifti: Path, folder: Path, series: str = "1", drop: tuple[int, ...] = (), shift: dict[int, float] | None = None,
) -> Path:
    """The NIfTI volume `nifti` (rounded to int16) written as one DICOM CT series in `folder`, a file per
    slice. `drop` leaves slices out; `shift` moves slice k along its normal by `shift[k]` mm."""
    image = sitk.Cast(sitk.Round(sitk.ReadImage(str(nifti), sitk.sitkFloat32)), sitk.sitkInt16)
    d = image.GetDirection()
    normal = np.array([d[2], d[5], d[8]])
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    common = {
        "0008|0060": "CT", "0008|0008": "DERIVED\\SECONDARY", "0020|000d": f"{UID_ROOT}.1",
        "0020|000e": f"{UID_ROOT}.2.{series}",
        "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": f"{image.GetSpacing()[2]:.6f}",
    }
    for k in range(image.GetDepth()):
        if k in drop:
            continue
        piece = image[:, :, k]
        for tag, value in common.items():
            piece.SetMetaData(tag, value)
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k))) + normal * (shift or {}).get(k, 0.0)
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0008|0018", f"{UID_ROOT}.3.{series}.{k + 1}")
        writer.SetFileName(str(folder / f"slice_{series}_{k:03d}.dcm"))
        with process_locale_kept():
            writer.Execute(piece)
    return folder
