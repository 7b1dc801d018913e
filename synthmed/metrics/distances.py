"""Distances between two sets of features: Fréchet distance and KID (kernel inception distance).

Both follow torch-fidelity's conventions: Fréchet distance between Gaussians fitted to the features
(unbiased covariance, ``ddof=1``); KID as the unbiased MMD² with the polynomial kernel
``k(x, y) = (x·y / F + 1)³`` averaged over random subsets. Unlike torch-fidelity, the subset size is
capped at the smaller set, so KID works below 1000 samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthmed.errors import UserError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_DEGREE = 3
KID_COEF0 = 1.0


def check_feature_pair(a: np.ndarray, b: np.ndarray, what: str = "features", min_count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float64 ``[N, F]`` arrays with the same F and at least `min_count` finite rows.

    Raises:
        UserError: naming `what`, when a set is empty, too small, not 2-D, non-finite, or the
            feature sizes differ.
    """
    out = []
    for name, x in (("first", a), ("second", b)):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise UserError(f"{what}: the {name} set must be [N, F], got shape {list(x.shape)}")
        if x.shape[0] < min_count:
            raise UserError(f"{what}: the {name} set has {x.shape[0]} sample(s); at least {min_count} needed")
        if not np.isfinite(x).all():
            raise UserError(f"{what}: the {name} set holds NaN or infinite values")
        out.append(x)
    if out[0].shape[1] != out[1].shape[1]:
        raise UserError(f"{what}: feature sizes differ ({out[0].shape[1]} vs {out[1].shape[1]})")
    return out[0], out[1]


def _trace_sqrt_product(a_centred: np.ndarray, b_centred: np.ndarray) -> float:
    """tr sqrt(S_a S_b) for the sample covariances of two centred data matrices, exactly.

    With few samples (N < F) the nonzero eigenvalues of S_a S_b are the squared singular values of
    A Bᵀ / sqrt((n_a-1)(n_b-1)), so the N x N route is both exact and far cheaper than sqrtm of F x F.
    """
    n_a, n_b = len(a_centred), len(b_centred)
    scale = np.sqrt((n_a - 1) * (n_b - 1))
    if min(n_a, n_b) <= a_centred.shape[1]:
        return float(np.linalg.svd(a_centred @ b_centred.T, compute_uv=False).sum() / scale)
    s_a = a_centred.T @ a_centred / (n_a - 1)
    s_b = b_centred.T @ b_centred / (n_b - 1)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance ``|mu_a - mu_b|² + tr(S_a + S_b - 2 sqrt(S_a S_b))`` of two feature sets ``[N, F]``.

    Raises:
        UserError: see `check_feature_pair`.
    """
    a, b = check_feature_pair(a, b, "Fréchet distance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    a_c, b_c = a - mu_a, b - mu_b
    trace_a = float((a_c**2).sum() / (len(a) - 1))
    trace_b = float((b_c**2).sum() / (len(b) - 1))
    value = float(((mu_a - mu_b) ** 2).sum()) + trace_a + trace_b - 2 * _trace_sqrt_product(a_c, b_c)
    return max(value, 0.0)  # rounding can leave a tiny negative for identical sets


def frechet_distance_gaussians(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance of two Gaussians given by mean and covariance (the closed form)."""
    w, v = np.linalg.eigh(np.asarray(cov_a, np.float64))
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root_a @ np.asarray(cov_b, np.float64) @ root_a)
    diff = np.asarray(mu_a, np.float64) - np.asarray(mu_b, np.float64)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + KID_COEF0) ** KID_DEGREE


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of two samples with KID's polynomial kernel."""
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    sum_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    sum_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2 * k_xy.mean())


@dataclass(frozen=True)
class KIDResult:
    mean: float  # mean MMD² over subsets
    std: float  # standard deviation over subsets
    subset_values: np.ndarray  # MMD² of every subset
    subset_size: int  # samples per set in each subset


def kernel_inception_distance(
    a: np.ndarray,
    b: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> KIDResult:
    """KID of two feature sets ``[N, F]``: unbiased MMD² over `subsets` random subsets.

    The subset size is ``min(subset_size, N_a, N_b)``: torch-fidelity asserts N >= 1000 by default,
    which rules out most medical sets. Subsets are drawn without replacement.

    Raises:
        UserError: see `check_feature_pair`; `subsets` < 1.
    """
    a, b = check_feature_pair(a, b, "KID")
    if subsets < 1:
        raise UserError(f"KID: subsets must be at least 1, got {subsets}")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = np.array([
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ])
    return KIDResult(float(values.mean()), float(values.std()), values, size)
