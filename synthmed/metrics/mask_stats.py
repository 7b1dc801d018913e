"""Mask statistics per case and label (volume, connected components, centroid), compared as distributions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.stats import ks_2samp, wasserstein_distance

from synthmed.errors import UserError

AXES = ("x", "y", "z")


def mask_statistics(masks: np.ndarray, labels: list[int], voxel_volume: float = 1.0) -> dict[str, np.ndarray]:
    """Per-case statistics of integer masks ``[N, (D,) H, W]`` for every foreground label.

    Returns:
        ``{"label_1/volume": [N] (voxel_volume units, mm³ when given), "label_1/components": [N],
        "label_1/centroid_x": [N] (fraction of the axis; NaN when the label is absent), ...}``.
    """
    masks = np.asarray(masks)
    structure = ndimage.generate_binary_structure(masks.ndim - 1, masks.ndim - 1)
    stats: dict[str, list[float]] = {}
    for label in (v for v in labels if v != 0):
        for mask in masks:
            region = mask == label
            _, n = ndimage.label(region, structure=structure)
            points = np.argwhere(region)
            centre = points.mean(0) / np.maximum(np.asarray(mask.shape) - 1, 1) if len(points) else [np.nan] * mask.ndim
            stats.setdefault(f"label_{label}/volume", []).append(region.sum() * voxel_volume)
            stats.setdefault(f"label_{label}/components", []).append(n)
            for axis, c in zip(AXES, centre):
                stats.setdefault(f"label_{label}/centroid_{axis}", []).append(c)
    return {k: np.asarray(v, np.float64) for k, v in stats.items()}


def compare_mask_statistics(real: np.ndarray, synthetic: np.ndarray, labels: list[int],
                            voxel_volume: float = 1.0) -> dict[str, dict]:
    """Each statistic's real and synthetic median, 1-D Wasserstein distance and two-sample KS test.

    Raises:
        UserError: a mask set is empty or the two sets differ in spatial shape.
    """
    if len(real) == 0 or len(synthetic) == 0:
        raise UserError("mask statistics: a set of masks is empty")
    if real.shape[1:] != synthetic.shape[1:]:
        raise UserError(f"mask statistics: real masks {list(real.shape[1:])} and synthetic {list(synthetic.shape[1:])} differ in shape")
    r_stats = mask_statistics(real, labels, voxel_volume)
    s_stats = mask_statistics(synthetic, labels, voxel_volume)
    out = {}
    for key in r_stats:
        r, s = r_stats[key][~np.isnan(r_stats[key])], s_stats[key][~np.isnan(s_stats[key])]
        entry = {"n_real": int(len(r)), "n_synthetic": int(len(s)), "real_median": None, "synthetic_median": None,
                 "wasserstein": None, "ks_statistic": None, "ks_pvalue": None}
        if len(r) and len(s):
            ks = ks_2samp(r, s)
            entry.update(real_median=float(np.median(r)), synthetic_median=float(np.median(s)),
                         wasserstein=float(wasserstein_distance(r, s)), ks_statistic=float(ks.statistic),
                         ks_pvalue=float(ks.pvalue))
        out[key] = entry
    return out
