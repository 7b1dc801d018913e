"""Inputs of the downstream benchmark: real cases from the manifest, synthetic sets, leakage guard.

Real cases come from the prepared cache (network units, [-1, 1]). Synthetic sets are folders in
nnU-Net layout written by `synthmed sample` (original units); they are mapped back to [-1, 1] with the
manifest's intensity mapping, so that both look alike to the segmentation network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import Manifest
from synthmed.errors import UserError, format_problems
from synthmed.sample.card import load_card
from synthmed.sample.postprocess import images_to_network_units

log = logging.getLogger(__name__)

LEAKAGE_WARNING = (
    "LEAKAGE: the generator of synthetic set(s) {sets} was trained on {n} case(s) of the test split "
    "({examples}); test scores of arms that use them are optimistic and must not be reported as "
    "held-out results"
)


@dataclass
class CaseArrays:
    """Stacked cases: images float32 [N,1,D,H,W] in [-1, 1], masks int64 [N,D,H,W], their ids."""

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | list[int]) -> "CaseArrays":
        index = list(index)
        return CaseArrays(self.images[index], self.masks[index], [self.ids[i] for i in index])

    @staticmethod
    def concat(parts: list["CaseArrays"]) -> "CaseArrays":
        parts = [p for p in parts if len(p)]
        return CaseArrays(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.masks for p in parts]),
            [i for p in parts for i in p.ids],
        )


def binarize_masks(masks: np.ndarray) -> np.ndarray:
    return (masks > 0).astype(np.int64)


def load_real(manifest: Manifest, ids: list[str], binarize: bool = False) -> CaseArrays:
    images, masks = load_arrays(manifest, ids)
    return CaseArrays(images, binarize_masks(masks) if binarize else masks, list(ids))


def synthetic_case_files(folder: Path) -> list[tuple[str, Path, Path]]:
    """(case id, image file, label file) of every case of a synthetic set, sorted by id.

    Raises:
        UserError: the folder or its labelsTr/ is missing, or a label has no channel-0 image.
    """
    if not folder.is_dir():
        raise UserError(f"{folder}: synthetic set not found (expected a folder written by `synthmed sample`)")
    labels_dir = folder / "labelsTr"
    label_files = sorted(labels_dir.glob("*.nii.gz"))
    if not label_files:
        raise UserError(f"{labels_dir}: no label files (*.nii.gz); is {folder} a synthetic set?")
    cases, missing = [], []
    for label in label_files:
        case_id = label.name[: -len(".nii.gz")]
        image = folder / "imagesTr" / f"{case_id}_0000.nii.gz"
        if not image.is_file():
            missing.append(f"{image}: image missing for label {label.name}")
        cases.append((case_id, image, label))
    if missing:
        raise UserError(format_problems(f"{folder}: incomplete synthetic set", missing))
    return cases


def load_synthetic(folder: str | Path, manifest: Manifest, indices: list[int] | None = None,
                   binarize: bool = False) -> CaseArrays:
    """Cases `indices` (positions in id order; None: all) of a synthetic set, in network units.

    Raises:
        UserError: an index is out of range, a file cannot be read, a shape differs from the
            manifest's prepared shape, or a mask holds labels the manifest does not declare.
    """
    folder = Path(folder)
    all_files = synthetic_case_files(folder)
    indices = list(range(len(all_files))) if indices is None else list(indices)
    if indices and max(indices) >= len(all_files):
        raise UserError(f"{folder}: has {len(all_files)} synthetic cases, the config asks for {max(indices) + 1} "
                        "(n_synthetic)")
    files = [all_files[i] for i in indices]
    shape = tuple(manifest.preprocessing["shape"])
    valid_labels = set(manifest.labels)
    images, masks, problems = [], [], []
    for case_id, image_path, label_path in files:
        try:
            image = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)
            mask = np.asarray(nib.load(label_path).dataobj)
        except Exception as e:  # nibabel raises many types for damaged files
            problems.append(f"{image_path.name}/{label_path.name}: unreadable NIfTI ({e})")
            continue
        if image.shape != shape or mask.shape != shape:
            problems.append(f"{case_id}: shape image {image.shape}, mask {mask.shape}; manifest shape {shape}")
            continue
        unknown = set(np.unique(mask).astype(int).tolist()) - valid_labels
        if unknown:
            problems.append(f"{label_path.name}: labels {sorted(unknown)} not in the manifest's labels {sorted(valid_labels)}")
            continue
        images.append(image)
        masks.append(mask.astype(np.int64))
    if problems:
        raise UserError(format_problems(f"{folder}: synthetic set does not match {manifest.path}", problems))
    if not images:
        shape_ = (0, 1, *shape)
        return CaseArrays(np.zeros(shape_, np.float32), np.zeros((0, *shape), np.int64), [])
    stacked = images_to_network_units(np.stack(images)[:, None], manifest.preprocessing["intensity"])
    masks_arr = np.stack(masks)
    return CaseArrays(stacked, binarize_masks(masks_arr) if binarize else masks_arr, [f[0] for f in files])


def check_leakage(manifest: Manifest, synthetic: dict[str, str], allow_leakage: bool = False) -> list[str]:
    """Refuse synthetic sets whose generator saw a test case of `manifest`.

    Reads each set's ``card.json``: ``trained_on_case_ids`` must not meet the manifest's test split,
    and ``manifest.sha256`` should be this manifest's hash (a different manifest may have put the test
    cases into its train split under the same ids, so the guard cannot vouch for it).

    Returns:
        Warnings to carry into the results (non-empty only with `allow_leakage`, or for a
        manifest-hash mismatch without overlap).

    Raises:
        UserError: a card is missing or unreadable, or (without `allow_leakage`) a test case is among
            the generator's training cases, or the card names another manifest.
    """
    test_ids = set(manifest.split_ids("test"))
    if not test_ids:
        raise UserError(f"{manifest.path}: the test split is empty; the benchmark needs held-out real test cases "
                        "(prepare with a test fraction > 0)")
    problems, warnings, leaking = [], [], {}
    for name, path in synthetic.items():
        card = load_card(Path(path))
        seen = set(card.get("trained_on_case_ids") or [])
        overlap = sorted(seen & test_ids)
        if overlap:
            leaking[name] = overlap
        card_sha = (card.get("manifest") or {}).get("sha256")
        if card_sha != manifest.sha256:
            msg = (f"synthetic set {name!r} ({path}/card.json): its generator was trained with manifest sha256 "
                   f"{str(card_sha)[:12]}..., not this manifest ({manifest.sha256[:12]}..., {manifest.path}); "
                   "the leakage guard can only compare case ids")
            (warnings if allow_leakage else problems).append(msg)
    if leaking:
        all_ids = sorted({i for ids in leaking.values() for i in ids})
        msg = LEAKAGE_WARNING.format(sets=", ".join(leaking), n=len(all_ids), examples=", ".join(all_ids[:5]))
        (warnings if allow_leakage else problems).append(msg)
    if problems:
        raise UserError(format_problems("leakage guard refuses to run (pass --allow-leakage to override)", problems))
    for w in warnings:
        log.warning("!" * 20 + " " + w)
    return warnings
