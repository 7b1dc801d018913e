"""Cross-validation folds for an nnU-Net export (``splits_final.json``).

Validation parts hold only real cases, and a group (a patient, a video) never straddles a fold's
training and validation parts. Synthetic cases are in every fold's training part only: a fold's
validation score then says how well real cases are segmented, as the held-out test split does.
"""

from __future__ import annotations

from synthmed.data.manifest import Manifest
from synthmed.data.splits import make_splits
from synthmed.errors import UserError

DEFAULT_FOLDS = 5


def held_out_folds(manifest: Manifest, k: int | None = None) -> list[list[str]]:
    """The real cases each fold validates on.

    With `k` None and a manifest that has folds, these are the manifest's folds (its val split then
    trains in every fold). Otherwise `k` (default 5) folds of the train + val cases, whole groups
    each, seeded with the manifest's split seed.

    Raises:
        UserError: `k` is below 2, or there are fewer groups than folds.
    """
    if k is None and manifest.splits.get("folds"):
        return [sorted(fold) for fold in manifest.splits["folds"]]
    k = DEFAULT_FOLDS if k is None else k
    if k < 2:
        raise UserError(f"--folds {k}: nnU-Net's cross-validation needs at least 2 folds")
    real = manifest.split_ids("trainval")
    groups = {case_id: str(manifest.case(case_id).get("group", case_id)) for case_id in real}
    n_groups = len(set(groups.values()))
    if n_groups < k:
        raise UserError(f"--folds {k}: {manifest.path} has only {n_groups} group(s) in its train and val splits; "
                        f"choose --folds {n_groups} or fewer")
    splits = make_splits(groups, seed=int(manifest.splits.get("seed", 0)), test_fraction=0.0, val_fraction=0.0,
                         k_folds=k)
    return splits["folds"]


def nnunet_splits(manifest: Manifest, synthetic_ids: list[str], k: int | None = None) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json``: one ``{"train": [...], "val": [...]}`` per fold.

    Every real case of the train and val splits is in exactly one fold's ``val`` part or (manifest
    folds only) the val split trains in every fold; `synthetic_ids` are in every ``train`` part.

    Raises:
        UserError: see `held_out_folds`.
    """
    real = manifest.split_ids("trainval")
    folds = held_out_folds(manifest, k)
    return [{"train": sorted(set(real) - set(fold)) + sorted(synthetic_ids), "val": sorted(fold)} for fold in folds]
