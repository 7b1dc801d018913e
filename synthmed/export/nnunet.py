"""``synthmed export nnunet``: a ready-to-train nnU-Net v2 raw dataset from a manifest and synthetic sets.

Layout written under ``OUT/DatasetXXX_Name/``::

    imagesTr/<real id>_0000.nii.gz        the manifest's train + val cases
    imagesTr/syn_<set>_0000_0000.nii.gz   the first n cases of each synthetic set (id order)
    labelsTr/<case>.nii.gz                uint8, the manifest's consecutive class indices (source values in dataset.json)
    imagesTs/, labelsTs/                  the manifest's test cases
    dataset.json                          nnU-Net v2 (synthmed.data.nnunet_json)
    splits_final.json                     folds: real cases only in val parts, groups kept whole
    synthmed_export.json                  provenance: manifest, sets, case names, label mapping (source -> written)

2D sets are written as PNG (``.png``) the same way. Real cases are written from the prepared cache at
the prepared geometry (the manifest's per-case affine: reoriented, resampled, cropped and padded as
``prepare`` did) with the prepared intensity mapping undone per case (HU for a CT window; each case's
own percentile range for MRI). That is the domain the generator learnt and the synthetic cases live
in, so nnU-Net sees real and synthetic cases alike, and it works for every input format ``prepare``
reads. The original files, at their source geometry, are not copied: their label fixes and 2D
conversions would have to be redone, and their field of view differs from the synthetic cases'.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synthmed.data.dataset import load_case_arrays
from synthmed.data.manifest import Manifest, load_manifest
from synthmed.data.nnunet_json import build_dataset_json, remap_mask
from synthmed.errors import UserError, format_problems
from synthmed.export.folds import nnunet_splits
from synthmed.fileio import atomic_directory, atomic_write_json, refuse_partial_input, sha256_file
from synthmed.sample.card import load_card
from synthmed.sample.postprocess import images_to_original_units, intensity_range
from synthmed.sample.synthetic_set import set_ending, synthetic_case_files
from synthmed.sample.writers import png_levels

EXPORT_KIND = "export"
NIFTI = ".nii.gz"
PNG = ".png"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class SyntheticPart:
    """The cases taken from one synthetic set: (original case id, channel-0 image, label) and new ids."""

    folder: Path
    cases: list[tuple[str, Path, Path]]
    new_ids: list[str]


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset501_Hippocampus``; refuses ids outside 1..999 and names nnU-Net cannot parse."""
    if not 1 <= dataset_id <= 999:
        raise UserError(f"--dataset-id {dataset_id}: nnU-Net dataset ids are 1..999 (501 and up are free by convention)")
    if not NAME_PATTERN.match(name):
        raise UserError(f"--name {name!r}: use letters, digits, '_' and '-' only (nnU-Net folder name)")
    return f"Dataset{dataset_id:03d}_{name}"


def default_name(manifest: Manifest) -> str:
    """The manifest's first source name with unusable characters dropped, else 'Synthmed'."""
    sources = manifest.data.get("sources") or [{}]
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "", str(sources[0].get("name", "")))
    return cleaned if cleaned and cleaned[0].isalnum() else "Synthmed"


def export_nnunet(manifest_path: str | os.PathLike, synthetic: list[str | os.PathLike], out: str | os.PathLike, *,
                  n: int | None = None, dataset_id: int = 501, name: str | None = None, folds: int | None = None,
                  overwrite: bool = False) -> Path:
    """Write ``out/DatasetXXX_Name/`` (nnU-Net v2 raw layout); return that folder.

    Args:
        manifest_path: a prepared folder or its manifest.json.
        synthetic: synthetic set folders written by ``synthmed sample`` (each with its card).
        out: the folder that holds nnU-Net datasets (e.g. ``$nnUNet_raw``).
        n: synthetic cases taken from each set (the first n by id); None: all.
        dataset_id, name: the nnU-Net dataset id and name (default: the manifest's first source).
        folds: folds of ``splits_final.json``; None: the manifest's folds, or 5 when it has none.
        overwrite: replace a dataset folder an earlier ``synthmed export`` wrote.

    Raises:
        UserError: a bad manifest or set, a set whose generator saw a test case or came from another
            manifest, n larger than a set, a dataset id already used in `out` under another name, too few
            groups for the folds, or an output folder that may not be written.
    """
    manifest = load_manifest(manifest_path)
    folder = Path(out).expanduser().resolve() / dataset_folder_name(dataset_id, name or default_name(manifest))
    _refuse_duplicate_id(folder, dataset_id)
    dims = int(manifest.preprocessing.get("dims", 3))
    ending = PNG if dims == 2 else NIFTI
    n_channels = load_case_arrays(manifest, manifest.cases[0]["id"])[0].shape[0]
    parts = _synthetic_parts(manifest, [Path(s) for s in synthetic], n, ending, n_channels)
    synthetic_ids = [i for part in parts for i in part.new_ids]
    real_train, real_test = manifest.split_ids("trainval"), manifest.split_ids("test")
    _refuse_clashing_ids(real_train + real_test, synthetic_ids)
    splits = nnunet_splits(manifest, synthetic_ids, folds)
    dataset, mapping = build_dataset_json(
        manifest.data["labels"], manifest.preprocessing.get("modality", "unknown"), n_channels,
        len(real_train) + len(synthetic_ids), ending, manifest.label_values, name=folder.name, numTest=len(real_test),
        description=f"{len(real_train)} real and {len(synthetic_ids)} synthetic training cases exported by synthmed "
                    "from a prepared manifest; provenance in synthmed_export.json")
    inputs = [manifest.root, *[p.folder for p in parts]]
    with atomic_directory(folder, kind=EXPORT_KIND, inputs=inputs, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for split_ids, suffix in ((real_train, "Tr"), (real_test, "Ts")):
            for case_id in split_ids:
                _write_real_case(tmp, suffix, manifest, case_id, mapping, ending)
        for part in parts:
            for (_, image, label), new_id in zip(part.cases, part.new_ids):
                _copy_synthetic_case(tmp, part, image, label, new_id, mapping, ending)
        atomic_write_json(tmp / "dataset.json", dataset)
        atomic_write_json(tmp / "splits_final.json", splits)
        atomic_write_json(tmp / "synthmed_export.json", _provenance(manifest, parts, mapping, folds, splits))
    return folder


def _refuse_duplicate_id(folder: Path, dataset_id: int) -> None:
    """nnU-Net refuses to run when two folders in nnUNet_raw share a dataset id."""
    if not folder.parent.is_dir():
        return
    clash = sorted(p.name for p in folder.parent.glob(f"Dataset{dataset_id:03d}_*") if p.name != folder.name)
    if clash:
        raise UserError(f"{folder.parent / clash[0]}: already holds nnU-Net dataset id {dataset_id}; nnU-Net would "
                        f"not know which to use. Choose another --dataset-id or --out")


def _refuse_clashing_ids(real_ids: list[str], synthetic_ids: list[str]) -> None:
    clash = sorted(set(real_ids) & set(synthetic_ids))
    if clash:
        raise UserError(f"case ids {clash[:5]} name both a real and a synthetic case; rename the synthetic set folder")


def _synthetic_parts(manifest: Manifest, folders: list[Path], n: int | None, ending: str,
                     n_channels: int) -> list[SyntheticPart]:
    """Check every set (card, leakage, format, size) and pick its cases; all problems are reported at once."""
    if n is not None and n < 1:
        raise UserError(f"-n {n}: take at least 1 synthetic case per set (or leave -n out to take all)")
    problems, parts, used_labels = [], [], set()
    repeated = sorted({str(f) for f in folders if [g.resolve() for g in folders].count(f.resolve()) > 1})
    if repeated:
        raise UserError(f"--synthetic {repeated[0]}: given more than once")
    for folder in folders:
        refuse_partial_input(folder, "--synthetic")
        cases = synthetic_case_files(folder)
        problems += _set_problems(manifest, folder, cases, n, ending, n_channels)
        label = _set_label(folder, used_labels)
        chosen = cases if n is None else cases[:n]
        parts.append(SyntheticPart(folder.resolve(), chosen, [f"syn_{label}_{i:04d}" for i in range(len(chosen))]))
    if problems:
        raise UserError(format_problems("synthetic set(s) cannot be exported", problems))
    return parts


def _set_problems(manifest: Manifest, folder: Path, cases: list, n: int | None, ending: str,
                  n_channels: int) -> list[str]:
    problems = _leakage_problems(manifest, folder)
    if not cases:
        return problems + [f"{folder / 'labelsTr'}: no cases"]
    if n is not None and n > len(cases):
        problems.append(f"{folder}: -n {n} but the set has {len(cases)} cases")
    if set_ending(folder) != ending:
        problems.append(f"{folder}: {set_ending(folder)} files, but the manifest's cases are written as {ending}")
    elif _channels_of(cases[0][1], ending) != n_channels:
        problems.append(f"{folder}: {_channels_of(cases[0][1], ending)} image channel(s), the manifest's cases have "
                        f"{n_channels}")
    return problems


def _leakage_problems(manifest: Manifest, folder: Path) -> list[str]:
    """A set must name, in its card, this manifest and training cases that exclude the test split."""
    if not (folder / "card.json").is_file():
        return [f"{folder}: no card.json; export needs the set's provenance (the generator's training cases and "
                "manifest) to refuse a generator that saw test cases: use the folder `synthmed sample` wrote"]
    card = load_card(folder)
    seen = sorted(set(card.get("trained_on_case_ids") or []) & set(manifest.split_ids("test")))
    if seen:
        return [f"{folder / 'card.json'}: the generator was trained on {len(seen)} test case(s) of {manifest.path} "
                f"({', '.join(seen[:5])}); an nnU-Net test score with these synthetic cases would be optimistic"]
    card_sha = (card.get("manifest") or {}).get("sha256")
    if card_sha != manifest.sha256:
        return [f"{folder / 'card.json'}: the generator was trained with manifest sha256 {str(card_sha)[:12]}..., "
                f"not {manifest.path} ({manifest.sha256[:12]}...); its test split cannot be vouched for"]
    return []


def _channels_of(image: Path, ending: str) -> int:
    stem = image.name[: -len(f"_0000{ending}")]
    files = len(list(image.parent.glob(f"{stem}_[0-9][0-9][0-9][0-9]{ending}")))
    if ending == PNG and files == 1:  # one grey or RGB PNG; several: one grey PNG per channel
        from PIL import Image

        with Image.open(image) as im:
            return len(im.getbands())
    return files


def _set_label(folder: Path, used: set[str]) -> str:
    """A short, file-name-safe, unique label for a set: its folder name."""
    base = re.sub(r"[^A-Za-z0-9-]+", "-", folder.resolve().name).strip("-") or "set"
    label, k = base, 2
    while label in used:
        label, k = f"{base}{k}", k + 1
    used.add(label)
    return label


def _write_real_case(folder: Path, suffix: str, manifest: Manifest, case_id: str, mapping: dict[int, int],
                     ending: str) -> None:
    """One prepared case, intensities back in its own units, mask remapped; see the module docstring."""
    image_m11, mask = load_case_arrays(manifest, case_id)
    mask = remap_mask(mask, mapping)
    images, labels = folder / f"images{suffix}", folder / f"labels{suffix}"
    if ending == PNG:
        grey_channels = manifest.preprocessing["intensity"].get("mode") == "per_channel"
        bits = 8 if image_m11.shape[0] == 3 and not grey_channels else int(manifest.preprocessing.get("bit_depth", 8))
        levels = png_levels(image_m11, bits)
        for c, channel in enumerate(levels if grey_channels else [levels]):  # grey channels: one PNG each
            _save_png(channel[None] if grey_channels else channel, images / f"{case_id}_{c:04d}{PNG}")
        _save_png(mask[None], labels / f"{case_id}{PNG}")
        return
    case = manifest.case(case_id)
    affine = np.asarray(case["affine"], dtype=np.float64)
    image = images_to_original_units(image_m11, _case_intensity(manifest, case))
    for c in range(image.shape[0]):
        nib.save(_nifti(image[c], affine, np.float32), images / f"{case_id}_{c:04d}{NIFTI}")
    nib.save(_nifti(mask, affine, np.uint8), labels / f"{case_id}{NIFTI}")


def _case_intensity(manifest: Manifest, case: dict[str, Any]) -> dict[str, Any]:
    """The window that mapped this case to [-1, 1]: its own lo/hi, else the manifest's range."""
    own = case.get("intensity") or {}
    if own.get("lo") is not None and own.get("hi") is not None:
        return {"mode": "window", "lo": own["lo"], "hi": own["hi"]}
    return manifest.preprocessing["intensity"]


def _copy_synthetic_case(folder: Path, part: SyntheticPart, image: Path, label: Path, new_id: str,
                         mapping: dict[int, int], ending: str) -> None:
    """Image files copied as they are; the mask (the manifest's class indices, as sampled) read, checked and remapped."""
    stem = image.name[: -len(f"_0000{ending}")]
    for channel in sorted(image.parent.glob(f"{stem}_[0-9][0-9][0-9][0-9]{ending}")):
        shutil.copyfile(channel, folder / "imagesTr" / f"{new_id}{channel.name[len(stem):]}")
    target = folder / "labelsTr" / f"{new_id}{ending}"
    if ending == PNG:
        from PIL import Image

        with Image.open(label) as im:
            values = np.asarray(im)
        _save_png(remap_mask(values, mapping, label)[None], target)
        return
    original = nib.load(label)
    values = np.rint(np.asarray(original.dataobj)).astype(np.int64)
    mask = remap_mask(values, mapping, label)
    nib.save(_nifti(mask, original.affine, np.uint8), target)


def _save_png(levels: np.ndarray, path: Path) -> None:
    from PIL import Image

    pixels = levels[0] if levels.shape[0] == 1 else np.moveaxis(levels, 0, -1)
    Image.fromarray(pixels).save(path)


def _nifti(data: np.ndarray, affine: np.ndarray, dtype: type) -> nib.Nifti1Image:
    """A NIfTI with qform and sform both set to `affine` (scanner space, mm), as the sampler writes."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _provenance(manifest: Manifest, parts: list[SyntheticPart], mapping: dict[int, int], folds: int | None,
                splits: list[dict[str, list[str]]]) -> dict[str, Any]:
    return {
        "format": "synthmed-nnunet-export",
        "manifest": {"path": str(manifest.path), "sha256": manifest.sha256},
        "real_cases": "prepared cache at the prepared geometry, intensity mapping undone per case",
        "intensity_range": list(intensity_range(manifest.preprocessing["intensity"])),
        "label_mapping": {str(manifest.label_values[index]): new for index, new in mapping.items()},
        "folds": {"source": "manifest" if folds is None and manifest.splits.get("folds") else "grouped k-fold",
                  "k": len(splits)},
        "synthetic_sets": [{"path": str(p.folder), "card_sha256": sha256_file(p.folder / "card.json"),
                            "cases": {new: old for (old, _, _), new in zip(p.cases, p.new_ids)}} for p in parts],
    }

