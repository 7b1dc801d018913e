"""Masks for a mask-conditional generator when the user gives none: its own training masks, deformed.

Every sample takes one of the generator's training masks (``trained_on`` of the checkpoint's data
record, read from the manifest it names, whose sha256 must still match) and deforms it with a random
elastic + affine transform built from MONAI's grid transforms (`deform_mask`; nearest-neighbour, zero
padding): rotation, per-axis scaling and a smooth elastic displacement, all modest by default.

Reproducible per sample: which training mask sample ``i`` takes comes from a seeded permutation of
the training cases (cycled), and its deformation from a seed derived from ``(seed, i, try)``, so the
masks do not depend on the batch size or on ``n``. A deformation is kept only when every label of the
source mask keeps at least `MIN_KEPT_FRACTION` of its voxels and no foreground reaches an image border
that the source's foreground did not reach; otherwise the mask is redrawn with the next seed
(`TRIES_PER_STRENGTH` tries), then with half the deformation, and at last left as it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from synthmed.data.dataset import load_case_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError

SOURCE_KIND = "deformed_training_masks"
MIN_KEPT_FRACTION = 0.5  # every source label keeps at least this share of its voxels
TRIES_PER_STRENGTH = 4
STRENGTHS = (1.0, 0.5)  # full, then half the deformation; after that the mask is used as it is


@dataclass(frozen=True)
class Deformation:
    """Magnitudes of the random deformation (uniform ranges, symmetric around no change)."""

    rotate_deg: float = 10.0  # rotation about each axis, degrees
    scale: float = 0.10  # scaling per axis, fraction (0.1: 90 % .. 110 %)
    elastic: float = 0.03  # elastic displacement, standard deviation as a fraction of the smallest extent

    def scaled(self, factor: float) -> Deformation:
        return replace(self, rotate_deg=self.rotate_deg * factor, scale=self.scale * factor, elastic=self.elastic * factor)


def deformation_seed(seed: int, index: int, attempt: int) -> int:
    """The 32-bit seed of sample ``index``'s ``attempt``-th deformation (independent of batch size and n)."""
    return int(np.random.SeedSequence([seed % 2**64, index, attempt]).generate_state(1)[0])


def deform_mask(mask: np.ndarray, deformation: Deformation, seed: int) -> np.ndarray:
    """One random elastic + affine deformation of an integer mask [*S] (2D or 3D), nearest-neighbour.

    MONAI's `Rand2DElastic` recipe in any dimension: normal random offsets at control points every
    ``spacing`` voxels (`RandDeformGrid`), a random rotation and scaling (`RandAffineGrid`), the grid
    interpolated to full resolution, then `Resample`. (MONAI's `Rand3DElastic` smooths a voxel-wise
    field with a Gaussian instead: about 2 s per 64^3 mask on one core, against 0.05 s here.)
    """
    from monai.transforms import CenterSpatialCrop, RandAffineGrid, RandDeformGrid, Resample

    ndim, shape = mask.ndim, mask.shape
    if ndim not in (2, 3):
        raise ValueError(f"masks are 2D or 3D, got shape {shape}")
    spacing = (max(2, min(shape) // 4),) * ndim
    displacement = deformation.elastic * min(shape)  # standard deviation at the control points, voxels
    deform_grid = RandDeformGrid(spacing=spacing, magnitude_range=(displacement / 2, displacement))
    affine_grid = RandAffineGrid(rotate_range=(math.radians(deformation.rotate_deg),) * (1 if ndim == 2 else 3),
                                 scale_range=(deformation.scale,) * ndim, lazy=False)
    deform_grid.set_random_state(seed=seed)
    affine_grid.set_random_state(seed=seed)
    grid = affine_grid(grid=deform_grid(spatial_size=shape))
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=list(spacing), recompute_scale_factor=True,
                                           mode="bicubic" if ndim == 2 else "trilinear", align_corners=False)
    grid = CenterSpatialCrop(roi_size=shape)(grid[0])
    out = Resample(mode="nearest", padding_mode="zeros")(torch.from_numpy(mask[None].astype(np.float32)), grid)
    return np.rint(np.asarray(out)[0]).astype(np.int64)


def labels_kept(source: np.ndarray, deformed: np.ndarray, min_fraction: float = MIN_KEPT_FRACTION) -> bool:
    """Every foreground label of ``source`` keeps ``min_fraction`` of its voxels in ``deformed``, and the
    foreground of ``deformed`` touches no border face that the source's foreground does not touch."""
    for label in np.unique(source):
        if label != 0 and (deformed == label).sum() < min_fraction * (source == label).sum():
            return False
    return all(source_face or not deformed_face
               for source_face, deformed_face in zip(_border_faces(source > 0), _border_faces(deformed > 0)))


def _border_faces(foreground: np.ndarray) -> list[bool]:
    """Whether the foreground reaches each border face (first and last index of every axis)."""
    return [bool(np.take(foreground, i, axis=axis).any()) for axis in range(foreground.ndim) for i in (0, -1)]


def deform_keeping_labels(mask: np.ndarray, deformation: Deformation, seed: int, index: int) -> tuple[np.ndarray, dict]:
    """Sample ``index``'s deformation of ``mask`` that keeps its labels (see the module docstring).

    Returns:
        The deformed mask and its record: ``deformation_seed`` (None: left undeformed) and ``strength``
        (the factor the magnitudes were scaled by; 0 when left undeformed).
    """
    attempt = 0
    for strength in STRENGTHS:
        for _ in range(TRIES_PER_STRENGTH):
            seed_k = deformation_seed(seed, index, attempt)
            attempt += 1
            deformed = deform_mask(mask, deformation.scaled(strength), seed_k)
            if labels_kept(mask, deformed):
                return deformed, {"deformation_seed": seed_k, "strength": strength}
    return mask.astype(np.int64, copy=True), {"deformation_seed": None, "strength": 0.0}


def training_masks_for(data: dict, case_ids: list[str]) -> dict[str, np.ndarray]:
    """The cached masks of ``case_ids`` from the manifest a checkpoint's ``data`` record names.

    Raises:
        UserError: the manifest is gone, unreadable or changed since training (its sha256 differs), or a
            case cache cannot be read; the message says to pass --masks instead.
    """
    advice = "to sample this mask-conditional generator without them, pass --masks DIR or --mask-checkpoint RUN"
    try:
        manifest = load_manifest(data["manifest_path"])
        if manifest.sha256 != data["manifest_sha256"]:
            raise UserError(f"{manifest.path}: the manifest changed since the generator was trained on it (sha256 "
                            f"{manifest.sha256[:12]}..., the checkpoint records {data['manifest_sha256'][:12]}...), so "
                            "its masks may not be the ones the generator saw")
        return {case: load_case_arrays(manifest, case)[1].astype(np.int64) for case in case_ids}
    except UserError as e:
        raise UserError(f"{e}; the training masks cannot be used: {advice}") from None


def deformed_training_masks(data: dict, n: int, seed: int, binarize: bool = False,
                            deformation: Deformation = Deformation(),
                            seeds: list[int] | None = None) -> tuple[np.ndarray, dict]:
    """``n`` masks [n, *S], each a deformed training mask of the generator, and the record for its card.

    Args:
        data: the checkpoint's data record (``manifest_path``, ``manifest_sha256``, ``trained_on``).
        binarize: merge every foreground label into 1 first (a generator trained on binarised masks).
        seeds: one mask per seed instead (``n`` and ``seed`` unused): mask k is what ``n=1, seed=seeds[k]``
            gives, a function of its seed alone.

    Raises:
        UserError: see `training_masks_for`.
    """
    ids = sorted(data["trained_on"])
    if seeds is None:
        order = _case_order(seed, len(ids))
        draws = [(ids[order[i % len(ids)]], seed, i) for i in range(n)]
    else:
        draws = [(ids[_case_order(s, len(ids))[0]], s, 0) for s in seeds]
    sources = training_masks_for(data, sorted({case for case, _, _ in draws}))
    masks, pairs = [], []
    for i, (case, draw_seed, index) in enumerate(draws):
        source = (sources[case] > 0).astype(np.int64) if binarize else sources[case]
        mask, record = deform_keeping_labels(source, deformation, draw_seed, index)
        masks.append(mask)
        pairs.append({"index": i, "case": case, **({} if seeds is None else {"seed": draw_seed}), **record})
    record = {"kind": SOURCE_KIND, "manifest": {"path": data["manifest_path"], "sha256": data["manifest_sha256"]},
              "deformation": asdict(deformation), "pairs": pairs}
    return np.stack(masks), record


def _case_order(seed: int, n_cases: int) -> np.ndarray:
    """The seeded permutation of the training cases that masks are taken from (cycled)."""
    return np.random.default_rng(np.random.SeedSequence([seed % 2**64, n_cases])).permutation(n_cases)
