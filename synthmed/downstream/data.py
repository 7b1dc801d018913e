"""Inputs of the downstream benchmark: real cases from the manifest, synthetic sets, leakage guard.

Real cases come from the prepared cache (network units, [-1, 1]). Synthetic sets are folders in
nnU-Net layout written by `synthmed sample` (original units); they are mapped back to [-1, 1] with the
manifest's intensity mapping, so that both look alike to the segmentation network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import Manifest
from synthmed.errors import UserError, format_problems
from synthmed.sample.synthetic_set import load_synthetic_set
from synthmed.sample.card import load_card
from synthmed.sample.postprocess import check_image_channels, images_to_network_units

log = logging.getLogger(__name__)

LEAKAGE_WARNING = (
    "LEAKAGE: the generator of synthetic set(s) {sets} was trained on {n} case(s) of the test split "
    "({examples}); test scores of arms that use them are optimistic and must not be reported as "
    "held-out results"
)


EXTRA_LABELS_WARNING = (
    "EXTRA LABELS: the generator of synthetic set {path} was trained on {n} real labelled case(s) that "
    "{unit} neither trains nor validates on ({examples}); its result against the baseline may come from "
    "those labels rather than from synthesis"
)


@dataclass
class CaseArrays:
    """Stacked cases: images float32 [N,C,*S] in [-1, 1], masks int64 [N,*S], their ids."""

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


def load_synthetic(folder: str | Path, manifest: Manifest, indices: list[int] | None = None,
                   binarize: bool = False) -> CaseArrays:
    """Cases `indices` (positions in id order; None: all) of a synthetic set, in network units.

    Raises:
        UserError: an index is out of range, a file cannot be read, a shape differs from the
            manifest's prepared shape, or a mask holds labels the manifest does not declare.
    """
    folder = Path(folder)
    shape = tuple(manifest.preprocessing["shape"])
    images, masks, names = load_synthetic_set(folder, shape, indices)
    valid_labels = set(manifest.labels)
    unknown = sorted(set(np.unique(masks).tolist()) - valid_labels)
    if unknown:
        raise UserError(f"{folder}: mask labels {unknown} are not among {manifest.path}'s labels {sorted(valid_labels)}")
    check_image_channels(images, manifest.preprocessing["intensity"], str(folder))
    stacked = images_to_network_units(images, manifest.preprocessing["intensity"])
    return CaseArrays(stacked, binarize_masks(masks) if binarize else masks, names)


def check_leakage(manifest: Manifest, synthetic: dict[str, str], allow_leakage: bool = False) -> list[str]:
    """Refuse synthetic sets whose generator saw a test case of `manifest`.

    Reads each set's ``card.json``: ``trained_on_case_ids`` must not meet the manifest's test split,
    and ``manifest.sha256`` should be this manifest's hash (a different manifest may have put the test
    cases into its train split under the same ids, so the guard cannot vouch for it).

    Returns:
        Warnings to carry into the results (non-empty only with `allow_leakage`, or for a
        manifest-hash mismatch without overlap).

    Raises:
        UserError: a card is missing (even with `allow_leakage`: provenance is not optional) or
            unreadable, or (without `allow_leakage`) a test case is among
            the generator's training cases, or the card names another manifest.
    """
    test_ids = set(manifest.split_ids("test"))
    if not test_ids:
        raise UserError(f"{manifest.path}: the test split is empty; the benchmark needs held-out real test cases "
                        "(prepare with a test fraction > 0)")
    problems, warnings, leaking = [], [], {}
    for name, path in synthetic.items():
        if not (Path(path) / "card.json").is_file():
            raise UserError(f"synthetic set {name!r} ({path}): no card.json; downstream needs the set's provenance "
                            "(the generator's training cases and manifest) to guard against leakage: use the folder "
                            "that `synthmed sample` wrote, with its card")
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


def generator_case_ids(folder: str | Path) -> set[str]:
    """The real cases the generator of a synthetic set was trained on (its card's ``trained_on_case_ids``)."""
    return set(load_card(Path(folder)).get("trained_on_case_ids") or [])


def extra_labels(generator_ids: set[str], label_budget: set[str], test_ids: set[str]) -> list[str]:
    """Real labelled cases a generator saw beyond a unit's own (test cases are the leakage guard's)."""
    return sorted(generator_ids - label_budget - test_ids)
