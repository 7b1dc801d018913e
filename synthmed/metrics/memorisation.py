"""Memorisation audit: is a synthetic sample a copy of a training case?

For every synthetic sample, the distance to its nearest training case is divided by the typical
nearest-neighbour distance among the real training cases themselves (the median, over training
cases, of the distance to their nearest other training case). A ratio well below 1 means the sample
is closer to one patient than real patients are to each other: a likely copy. Distances are
Euclidean in a feature space (by default the images and masks themselves, see `pixel_features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

from synthmed.errors import UserError
from synthmed.metrics.distances import check_feature_pair

COPY_RATIO = 0.5  # flag when nearest-training distance < this x typical real NN distance
MAX_SIDE = 32  # pixel features: volumes average-pooled to at most this many voxels per side


def pixel_features(images: np.ndarray, masks: np.ndarray, num_labels: int) -> np.ndarray:
    """Images ``[N, C, *spatial]`` in [-1, 1] and masks scaled to [-1, 1], pooled to <= MAX_SIDE per axis, flattened."""
    x = torch.from_numpy(np.asarray(images, np.float32))
    m = torch.from_numpy(np.asarray(masks, np.float32))[:, None] / max(num_labels - 1, 1) * 2 - 1
    x = torch.cat([x, m], 1)
    factor = max(1, int(np.ceil(max(x.shape[2:]) / MAX_SIDE)))
    if factor > 1:
        pool = F.avg_pool3d if x.ndim == 5 else F.avg_pool2d
        x = pool(x, factor, ceil_mode=True)
    return x.flatten(1).numpy().astype(np.float64)


@dataclass
class MemorisationAudit:
    nearest_index: np.ndarray  # [N_syn] index of the nearest training case
    nearest_distance: np.ndarray  # [N_syn]
    typical_real_distance: float  # median NN distance among training cases
    ratio: np.ndarray  # [N_syn] nearest_distance / typical_real_distance
    flagged: np.ndarray  # [N_syn] bool
    threshold: float

    @property
    def fraction_flagged(self) -> float:
        return float(self.flagged.mean())

    def closest(self, k: int) -> np.ndarray:
        """Indices of the k synthetic samples with the smallest ratio."""
        return np.argsort(self.ratio, kind="stable")[:k]


def memorisation_audit(train: np.ndarray, synthetic: np.ndarray, threshold: float = COPY_RATIO) -> MemorisationAudit:
    """Audit synthetic features ``[N_syn, F]`` against training features ``[N_train, F]``.

    Raises:
        UserError: fewer than 2 training cases, an empty synthetic set, mismatched feature sizes,
            a threshold <= 0, or training cases that all coincide.
    """
    train, synthetic = check_feature_pair(train, synthetic, "memorisation audit", min_count=1)
    if len(train) < 2:
        raise UserError("memorisation audit: need at least 2 training cases to know a typical real distance")
    if threshold <= 0:
        raise UserError(f"memorisation audit: threshold must be > 0, got {threshold}")
    within = cdist(train, train)
    np.fill_diagonal(within, np.inf)
    typical = float(np.median(within.min(axis=1)))
    if typical <= 0:
        raise UserError("memorisation audit: training cases are duplicates of each other (typical distance 0)")
    d = cdist(synthetic, train)
    index = d.argmin(axis=1)
    nearest = d[np.arange(len(d)), index]
    ratio = nearest / typical
    return MemorisationAudit(index, nearest, typical, ratio, ratio < threshold, threshold)
