"""Write a synthetic set to disk in nnU-Net v2 layout, with a card: NIfTI for 3D, PNG for 2D.

Layout of a written 3D set (``prefix="syn"``)::

    out_dir/
      imagesTr/syn_0000_0000.nii.gz   float32, original units (HU for CT), channel 0
      imagesTr/syn_0000_0001.nii.gz   channel 1, when images have 2 channels
      labelsTr/syn_0000.nii.gz        uint8 labels
      dataset.json                    nnU-Net v2 (synthmed.data.nnunet_json): channel_names, labels, ...
      card.json                       the dataset card (see synthmed.sample.card)

A 2D set has ``imagesTr/syn_0000_0000.png`` (grayscale, or RGB in one file as nnU-Net's natural-image
reader expects; lossless, 8- or 16-bit) and ``labelsTr/syn_0000.png`` (uint8 labels). PNG pixels
``0 .. 2**bits - 1`` stand linearly for the intensity range ``lo .. hi`` recorded in
``dataset.json["synthmed_png_intensity"]``; for photographs that range is 0..255 (or 0..65535), so
pixels are the original values. Images of several grey channels (a manifest with per-channel
intensity) are one grey PNG per channel, ``syn_0000_0000.png … syn_0000_000N.png``, each with its own
range (``synthmed_png_intensity["channels"]``: ``[{"lo", "hi"}, ...]``; ``lo``/``hi`` are channel 0's).
A mask-only set (M-SG) has no ``imagesTr`` files.

The folder is written under a temporary name and renamed when complete, so a failed run leaves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt
from tqdm import tqdm

from synthmed.data.nnunet_json import build_dataset_json, label_mapping, remap_mask
from synthmed.errors import UserError, format_problems
from synthmed.fileio import atomic_directory, atomic_write_json, check_output_folder
from synthmed.sample.postprocess import channel_intensities, clean_mask, images_to_original_units, intensity_range

FILE_ENDING = ".nii.gz"
PNG_ENDING = ".png"
SAMPLE_KIND = "sample"  # the command named in a synthetic set's output marker (see synthmed.fileio)
NIFTI_XFORM_SCANNER_ANAT = 1  # qform/sform code: the affine gives scanner-space millimetres


def reference_affine(preprocessing: dict[str, Any], train_cases: list[dict[str, Any]]) -> np.ndarray:
    """A real-world affine for synthetic volumes, taken from the prepared training cases.

    The affine has the prepared orientation (``preprocessing.orientation``, normally "RAS"; axes are
    not rotated), the prepared voxel spacing on its diagonal (``preprocessing.spacing``, or the
    per-axis median of the cases' spacing when the data was not resampled), and as origin the
    per-coordinate median of the cases' origins. A synthetic volume then sits where the real ones do
    and opens in a viewer at the right physical size.

    Args:
        preprocessing: the ``preprocessing`` entry of a prepared manifest.
        train_cases: manifest case entries (each with ``affine`` 4x4 and ``spacing``), normally the
            training cases of the generator.

    Returns:
        float64 array ``[4, 4]``.

    Raises:
        UserError: no cases, a malformed affine or spacing, or an unknown orientation code.
    """
    if not train_cases:
        raise UserError("reference_affine: no training cases given; cannot place synthetic volumes")
    orientation = preprocessing.get("orientation") or "RAS"
    try:
        ornt = axcodes2ornt(tuple(orientation))
    except Exception:
        raise UserError(f"preprocessing.orientation: unknown orientation code {orientation!r} (e.g. 'RAS')") from None
    if len(ornt) != 3 or np.isnan(ornt).any():
        raise UserError(f"preprocessing.orientation: {orientation!r} is not a 3-letter orientation code like 'RAS'")

    origins, spacings = [], []
    for i, case in enumerate(train_cases):
        name = case.get("id", f"#{i}")
        affine = np.asarray(case.get("affine"), dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise UserError(f"case {name}: affine must be a finite 4x4 matrix, got shape {affine.shape}")
        origins.append(affine[:3, 3])
        if case.get("spacing") is not None:
            spacings.append(np.asarray(case["spacing"], dtype=np.float64))
        else:
            spacings.append(np.linalg.norm(affine[:3, :3], axis=0))

    spacing = preprocessing.get("spacing")
    spacing = np.median(np.stack(spacings), axis=0) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (3,) or not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise UserError(f"preprocessing.spacing: expected 3 positive numbers, got {spacing.tolist()}")

    out = np.eye(4)
    out[:3, :3] = 0.0
    for array_axis, (world_axis, flip) in enumerate(ornt):
        out[int(world_axis), array_axis] = flip * spacing[array_axis]
    out[:3, 3] = np.median(np.stack(origins), axis=0)
    return out


def _label_map(labels: dict[str, str]) -> dict[int, str]:
    label_mapping(labels)  # nnU-Net's rules: 0 declared, unique names, 'background' only for 0
    by_value = {int(k): str(v) for k, v in labels.items()}
    if any(v < 0 or v > 255 for v in by_value):
        raise UserError(f"labels: values must be in 0..255 to be written as uint8, got {sorted(by_value)}")
    return by_value


def _validate(images: np.ndarray, masks: np.ndarray, labels: dict[int, str], affine: np.ndarray | None,
              grey_channels: bool = False) -> None:
    problems = []
    if images.ndim not in (4, 5):
        raise UserError(f"images: expected shape [N, C, D, H, W] (3D) or [N, C, H, W] (2D), got {list(images.shape)}")
    if masks.ndim != images.ndim - 1:
        raise UserError(f"masks: expected shape [N, *spatial] matching images {list(images.shape)}, got {list(masks.shape)}")
    if images.shape[0] != masks.shape[0]:
        problems.append(f"shape mismatch: {images.shape[0]} images but {masks.shape[0]} masks")
    if images.shape[2:] != masks.shape[1:]:
        problems.append(
            f"shape mismatch: image volumes are {list(images.shape[2:])} but masks are {list(masks.shape[1:])}"
        )
    if images.shape[0] == 0:
        problems.append("no samples to write (N = 0)")
    if not np.issubdtype(images.dtype, np.floating):
        problems.append(f"images: expected a float array, got dtype {images.dtype}")
    elif not np.isfinite(images).all():
        bad = np.flatnonzero(~np.isfinite(images.reshape(images.shape[0], -1)).all(axis=1))
        problems.append(f"images: NaN or infinite values in sample(s) {bad[:10].tolist()}")
    if not np.issubdtype(masks.dtype, np.integer):
        problems.append(f"masks: expected integer labels, got dtype {masks.dtype}")
    else:
        unknown = sorted(set(np.unique(masks).tolist()) - set(labels))
        if unknown:
            problems.append(f"masks: label values {unknown} are not in the declared labels {sorted(labels)}")
    if images.ndim == 4:
        if images.shape[1] not in (0, 1, 3) and not grey_channels:
            problems.append(f"images: 2D sets are written as grayscale or RGB PNG, got {images.shape[1]} channels")
    elif affine is None:
        problems.append("affine: 3D sets need a 4x4 affine (see reference_affine)")
    elif affine.shape != (4, 4) or not np.isfinite(affine).all():
        problems.append(f"affine: expected a finite 4x4 matrix, got shape {list(affine.shape)}")
    elif abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        problems.append("affine: the 3x3 part is singular (zero spacing?)")
    if problems:
        raise UserError(format_problems("cannot write synthetic set", problems))


def _nifti(data: np.ndarray, affine: np.ndarray, dtype: type) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    header = img.header
    header.set_data_dtype(dtype)
    header.set_xyzt_units("mm")
    img.set_qform(affine, code=NIFTI_XFORM_SCANNER_ANAT)
    img.set_sform(affine, code=NIFTI_XFORM_SCANNER_ANAT)
    header.set_zooms(tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)))
    return img


def write_synthetic_set(
    out_dir: str | os.PathLike,  # the folder to create
    images_m11: np.ndarray,  # float [N, C, D, H, W] (3D) or [N, C, H, W] (2D), network units [-1, 1]
    masks: np.ndarray,  # int [N, D, H, W] or [N, H, W] label values
    *,
    intensity: dict[str, Any],  # manifest preprocessing.intensity, to undo the [-1, 1] mapping
    labels: dict[str, str],  # manifest labels, str(int) -> name
    label_values: dict[str, int] | None = None,  # manifest label_values (index -> source value), for dataset.json
    affine: np.ndarray | None,  # 3D: [4, 4] world affine for every volume (see reference_affine); 2D: None
    modality: str | Sequence[str],  # channel name(s) for dataset.json, e.g. "MRI" or "CT"
    card: dict[str, Any],  # dataset card (see synthmed.sample.card.build_card)
    prefix: str = "syn",  # file name prefix of the cases
    overwrite: bool = False,  # replace an existing out_dir written by `synthmed sample`
    inputs: Sequence[str | os.PathLike | None] = (),  # what the set was made from: out_dir must not overlap them
    min_component_size: int | None = None,  # clean_mask: drop components smaller than this (voxels)
    keep_largest: bool = False,  # clean_mask: keep only the largest component per label
    bit_depth: int = 8,  # 2D only: PNG bits per sample (8 or 16; RGB is always 8)
) -> Path:
    """Write synthetic pairs as an nnU-Net v2 raw dataset, with a dataset card.

    2D pairs (images ``[N, C, H, W]``) become PNG files as the module docstring describes; the rest of
    this docstring is about 3D.

    Images are mapped back to original units (:func:`images_to_original_units`) and written as
    float32, one file per channel (``{prefix}_{i:04d}_{c:04d}.nii.gz``). Masks are cleaned
    (:func:`clean_mask`) and written as uint8 (``{prefix}_{i:04d}.nii.gz``). Every file gets the same
    ``affine``, with qform and sform set (code 1, scanner) and header zooms equal to the spacing, in mm.
    ``dataset.json`` follows nnU-Net v2's rules (`synthmed.data.nnunet_json.build_dataset_json`: a
    ``background`` label 0, consecutive values, channel names that keep nnU-Net's CT normalisation);
    non-consecutive label values are remapped and the masks written with the new values; the source
    value of each written value is recorded in ``dataset.json`` where they differ (see `label_values`). ``card.json`` is ``card`` as given.

    All inputs are checked before anything is written. The folder is built under a temporary name and
    renamed at the end, so on any failure nothing is left behind.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        UserError: shape mismatch between images and masks, NaN or infinite image values, mask values
            not in ``labels``, a bad affine, intensity or label set, or ``out_dir`` overlaps an input or
            exists and may not be replaced (see `synthmed.fileio.check_output_folder`).
    """
    out_dir = Path(out_dir)
    images_m11 = np.asarray(images_m11)
    masks = np.asarray(masks)
    is_2d = images_m11.ndim == 4
    affine = None if affine is None else np.asarray(affine, dtype=np.float64)
    label_map = _label_map(labels)
    lo, hi = intensity_range(intensity)  # fails early on a bad intensity entry
    n_channels = len(channel_intensities(intensity))  # > 1: grey channels, each its own range
    _validate(images_m11, masks, label_map, affine, grey_channels=n_channels > 1)
    if is_2d and bit_depth not in (8, 16):
        raise UserError(f"bit_depth: PNG sets are 8- or 16-bit, got {bit_depth}")
    check_output_folder(out_dir, kind=SAMPLE_KIND, inputs=inputs, overwrite=overwrite)
    n = images_m11.shape[0]
    bits = 8 if images_m11.shape[1] == 3 and n_channels == 1 else bit_depth  # Pillow writes RGB PNG at 8 bits only
    dataset, mapping = build_dataset_json(
        labels, modality, images_m11.shape[1], n, PNG_ENDING if is_2d else FILE_ENDING, label_values, name=out_dir.name,
        description="synthetic image/mask pairs written by synthmed; provenance in card.json")
    if is_2d:
        dataset["synthmed_png_intensity"] = {"bit_depth": bits, "lo": lo, "hi": hi}
        if n_channels > 1:
            ranges = [intensity_range(intensity, c) for c in range(n_channels)]
            dataset["synthmed_png_intensity"]["channels"] = [{"lo": a, "hi": b} for a, b in ranges]

    with atomic_directory(out_dir, kind=SAMPLE_KIND, inputs=inputs, overwrite=overwrite) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for i in tqdm(range(n), desc="writing synthetic set", unit="case", disable=None):
            case = f"{prefix}_{i:04d}"
            mask = remap_mask(clean_mask(masks[i], min_size=min_component_size, keep_largest=keep_largest), mapping)
            if is_2d:
                _write_png_pair(tmp, case, images_m11[i], mask, bits, grey_channels=n_channels > 1)
            else:
                _write_nifti_pair(tmp, case, images_to_original_units(images_m11[i], intensity, channel_axis=0), mask, affine)
        atomic_write_json(tmp / "dataset.json", dataset)
        atomic_write_json(tmp / "card.json", card)
    return out_dir


def _write_nifti_pair(folder: Path, case: str, image: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> None:
    for c in range(image.shape[0]):
        nib.save(_nifti(image[c], affine, np.float32), folder / "imagesTr" / f"{case}_{c:04d}{FILE_ENDING}")
    nib.save(_nifti(mask, affine, np.uint8), folder / "labelsTr" / f"{case}{FILE_ENDING}")


def png_levels(images_m11: np.ndarray, bits: int) -> np.ndarray:
    """Network units [-1, 1] -> integer PNG levels 0 .. 2**bits - 1 (clipped, rounded)."""
    top = 2**bits - 1
    x = np.clip(np.asarray(images_m11, dtype=np.float64), -1.0, 1.0)
    return np.rint((x + 1.0) * 0.5 * top).astype(np.uint16 if bits == 16 else np.uint8)


def _write_png_pair(folder: Path, case: str, image_m11: np.ndarray, mask: np.ndarray, bits: int,
                    grey_channels: bool = False) -> None:
    """Write one case: its image as one grey or RGB PNG, or (`grey_channels`) one grey PNG per channel."""
    from PIL import Image

    if image_m11.shape[0]:  # a mask-only set (M-SG) has no image channels
        levels = png_levels(image_m11, bits)
        if grey_channels:
            for c, channel in enumerate(levels):
                Image.fromarray(channel).save(folder / "imagesTr" / f"{case}_{c:04d}{PNG_ENDING}")
        else:
            pixels = levels[0] if levels.shape[0] == 1 else np.moveaxis(levels, 0, -1)
            Image.fromarray(pixels).save(folder / "imagesTr" / f"{case}_0000{PNG_ENDING}")
    Image.fromarray(mask.astype(np.uint8)).save(folder / "labelsTr" / f"{case}{PNG_ENDING}")
