"""Per-case scores of predicted test masks: Dice per label and HD95 per label (in the unit of the spacings:
mm for 3D manifests, original-image pixels for 2D ones)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from synthmed.downstream.trainer import dice_per_label


def hd95_per_label(pred: np.ndarray, truth: np.ndarray, num_classes: int,
                   spacings: list[tuple[float, ...]]) -> np.ndarray:
    """95th-percentile Hausdorff distance [N, num_classes-1] of every foreground label, in the unit of `spacings`.

    Both masks empty: 0. Exactly one empty: the volume's diagonal in that unit, the largest possible
    distance, so that a missed structure counts as the worst score rather than vanishing from the mean
    (as in the Medical Segmentation Decathlon evaluation).
    """
    n, shape = pred.shape[0], pred.shape[1:]
    out = np.zeros((n, num_classes - 1), np.float64)
    for i in range(n):
        diagonal = float(np.linalg.norm(np.asarray(shape) * np.asarray(spacings[i])))
        for label in range(1, num_classes):
            p, t = pred[i] == label, truth[i] == label
            if not p.any() and not t.any():
                out[i, label - 1] = 0.0
            elif not p.any() or not t.any():
                out[i, label - 1] = diagonal
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    d = compute_hausdorff_distance(torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None],
                                                   include_background=True, percentile=95, spacing=list(spacings[i]))
                out[i, label - 1] = float(d.item())
    return out


def score_cases(pred: np.ndarray, truth: np.ndarray, num_classes: int,
                spacings: list[tuple[float, ...]]) -> dict[str, np.ndarray]:
    """{"dice": [N, L], "hd95": [N, L]} for the foreground labels 1..num_classes-1."""
    return {"dice": dice_per_label(pred, truth, num_classes).astype(np.float64),
            "hd95": hd95_per_label(pred, truth, num_classes, spacings)}
