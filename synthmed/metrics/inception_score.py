"""Inception Score from classifier logits, as torch-fidelity computes it (10 splits, unbiased logits)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from synthmed.errors import UserError

IS_SPLITS = 10


def inception_score(logits: np.ndarray, splits: int = IS_SPLITS, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over `splits` of ``exp(E_x KL(p(y|x) || p(y)))``; samples are shuffled with `seed` first.

    Splits are capped at the sample count so that small sets still get a figure.

    Raises:
        UserError: fewer than 2 samples or logits not ``[N, classes]``.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < 2:
        raise UserError(f"inception score: need logits [N >= 2, classes], got shape {list(logits.shape)}")
    logits = logits[np.random.default_rng(seed).permutation(len(logits))]
    log_p = log_softmax(logits, axis=1)
    scores = []
    for part in np.array_split(log_p, min(splits, len(logits))):
        log_marginal = np.log(np.exp(part).mean(0))
        kl = (np.exp(part) * (part - log_marginal)).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
