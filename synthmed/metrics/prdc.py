"""Precision, recall, density and coverage of a synthetic set against a real one (Naeem et al., 2020).

Each real sample gets a k-NN ball (radius = distance to its k-th nearest real neighbour).
- precision: fraction of synthetic samples inside at least one real ball (fidelity);
- recall: fraction of real samples inside at least one synthetic ball (synthetic k-NN radii);
- density: mean number of real balls holding a synthetic sample, divided by k (about 1 when matched);
- coverage: fraction of real balls holding at least one synthetic sample (diversity).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from synthmed.errors import UserError
from synthmed.metrics.distances import check_feature_pair
from synthmed.metrics.keys import MetricKey

PRDC_K = 5


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K) -> dict[str, float]:
    """The four figures as ``{MetricKey.PRECISION: ..., RECALL, DENSITY, COVERAGE}``.

    Raises:
        UserError: a set has k samples or fewer, or see `check_feature_pair`.
    """
    real, fake = check_feature_pair(real, fake, "precision/recall", min_count=k + 1)
    if k < 1:
        raise UserError(f"precision/recall: k must be at least 1, got {k}")
    real_radius = _kth_neighbour_radius(real, k)
    fake_radius = _kth_neighbour_radius(fake, k)
    d = cdist(real, fake)  # [N_real, N_fake]
    inside_real = d < real_radius[:, None]
    return {
        MetricKey.PRECISION.value: float(inside_real.any(axis=0).mean()),
        MetricKey.RECALL.value: float((d < fake_radius[None, :]).any(axis=1).mean()),
        MetricKey.DENSITY.value: float(inside_real.sum(axis=0).mean() / k),
        MetricKey.COVERAGE.value: float((d.min(axis=1) < real_radius).mean()),
    }
