"""Weight-free radiomics features for a Fréchet Radiomics Distance (Konz et al., 2024).

pyradiomics does not build here, so the features are computed with numpy/scipy over the whole image
(2D or 3D), after quantising [-1, 1] into ``LEVELS`` fixed-width grey levels (fixed bin edges, so an
intensity shift between sets stays visible). Definitions follow pyradiomics / IBSI:

- first order (16): mean, standard deviation, skewness, kurtosis, 10/25/50/75/90th percentiles,
  interquartile range, range, mean absolute deviation, robust mean absolute deviation (10-90th),
  root mean square, entropy and uniformity of the grey-level histogram;
- GLCM (10), symmetric, distance 1, averaged over the 13 (3D) or 4 (2D) directions: contrast,
  dissimilarity, homogeneity (inverse difference), angular second moment, joint entropy,
  correlation, cluster shade, cluster prominence, maximum probability, joint average;
- GLRLM (7), runs along each array axis, averaged: short- and long-run emphasis, grey-level and
  run-length non-uniformity (normalised), run percentage, low and high grey-level run emphasis;
- GLSZM (7), zones connected over the full neighbourhood: small- and large-area emphasis, grey-level
  and size-zone non-uniformity (normalised), zone percentage, low and high grey-level zone emphasis.

The 40 features have unrelated units, so the evaluation z-scores them on the real set (``standardise``).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage, stats

from synthmed.metrics.extractors.base import FeatureExtractor, register_feature_extractor

LEVELS = 16

FIRST_ORDER = ("mean", "std", "skewness", "kurtosis", "p10", "p25", "p50", "p75", "p90", "iqr", "range",
               "mad", "robust_mad", "rms", "entropy", "uniformity")
GLCM = ("contrast", "dissimilarity", "homogeneity", "asm", "joint_entropy", "correlation", "cluster_shade",
        "cluster_prominence", "max_probability", "joint_average")
GLRLM = ("sre", "lre", "gln", "rln", "run_percentage", "lglre", "hglre")
GLSZM = ("sae", "lae", "zone_gln", "szn", "zone_percentage", "lglze", "hglze")
FEATURE_NAMES = tuple(f"firstorder_{n}" for n in FIRST_ORDER) + tuple(f"glcm_{n}" for n in GLCM) + \
    tuple(f"glrlm_{n}" for n in GLRLM) + tuple(f"glszm_{n}" for n in GLSZM)


def quantise(image: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Grey levels 0..levels-1 from [-1, 1] with fixed-width bins."""
    return np.clip(np.floor((np.asarray(image, np.float64) + 1) / 2 * levels), 0, levels - 1).astype(np.int64)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def first_order_features(image: np.ndarray, grey: np.ndarray, levels: int = LEVELS) -> list[float]:
    x = np.asarray(image, np.float64).ravel()
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    hist = np.bincount(grey.ravel(), minlength=levels) / x.size
    flat = np.ptp(x) == 0  # skewness and kurtosis are undefined for a constant image; call them 0
    return [x.mean(), x.std(), 0.0 if flat else stats.skew(x), 0.0 if flat else stats.kurtosis(x),
            p10, p25, p50, p75, p90, p75 - p25, np.ptp(x), np.abs(x - x.mean()).mean(),
            np.abs(robust - robust.mean()).mean(), np.sqrt((x**2).mean()), _entropy(hist), (hist**2).sum()]


def _offsets(ndim: int) -> list[tuple[int, ...]]:
    """One of each pair of opposite unit neighbour offsets: 13 in 3D, 4 in 2D."""
    all_offsets = [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]
    return [o for o in all_offsets if o > tuple(-v for v in o)]


def _shifted_pairs(grey: np.ndarray, offset: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    src = tuple(slice(max(0, -o), grey.shape[i] - max(0, o)) for i, o in enumerate(offset))
    dst = tuple(slice(max(0, o), grey.shape[i] - max(0, -o)) for i, o in enumerate(offset))
    return grey[src].ravel(), grey[dst].ravel()


def glcm_features(grey: np.ndarray, levels: int = LEVELS) -> list[float]:
    i, j = np.meshgrid(np.arange(levels) + 1.0, np.arange(levels) + 1.0, indexing="ij")
    rows = []
    for offset in _offsets(grey.ndim):
        a, b = _shifted_pairs(grey, offset)
        m = np.bincount(a * levels + b, minlength=levels * levels).reshape(levels, levels).astype(np.float64)
        m = m + m.T
        p = m / max(m.sum(), 1.0)
        mu_i, mu_j = (p * i).sum(), (p * j).sum()
        sd_i, sd_j = np.sqrt((p * (i - mu_i) ** 2).sum()), np.sqrt((p * (j - mu_j) ** 2).sum())
        corr = (p * (i - mu_i) * (j - mu_j)).sum() / (sd_i * sd_j) if sd_i * sd_j > 0 else 1.0
        rows.append([(p * (i - j) ** 2).sum(), (p * np.abs(i - j)).sum(), (p / (1 + np.abs(i - j))).sum(),
                     (p**2).sum(), _entropy(p.ravel()), corr, (p * (i + j - mu_i - mu_j) ** 3).sum(),
                     (p * (i + j - mu_i - mu_j) ** 4).sum(), p.max(), mu_i])
    return list(np.mean(rows, axis=0))


def run_length_matrix(grey: np.ndarray, axis: int, levels: int = LEVELS) -> np.ndarray:
    """GLRLM ``[levels, max_run]`` of runs along `axis`: entry (g, r-1) counts runs of level g and length r."""
    lines = np.moveaxis(grey, axis, -1).reshape(-1, grey.shape[axis])
    length = lines.shape[1]
    starts = np.ones_like(lines, dtype=bool)
    starts[:, 1:] = lines[:, 1:] != lines[:, :-1]
    start_index = np.flatnonzero(starts.ravel())
    run_lengths = np.diff(np.append(start_index, lines.size))
    # a run never crosses a line end because every line starts a run
    values = lines.ravel()[start_index]
    matrix = np.zeros((levels, length))
    np.add.at(matrix, (values, run_lengths - 1), 1)
    return matrix


def _size_matrix_features(matrix: np.ndarray, n_voxels: int) -> list[float]:
    """The 7 shared GLRLM/GLSZM features of a ``[levels, sizes]`` count matrix."""
    total = matrix.sum()
    g = np.arange(1, matrix.shape[0] + 1, dtype=np.float64)[:, None]
    s = np.arange(1, matrix.shape[1] + 1, dtype=np.float64)[None, :]
    return [(matrix / s**2).sum() / total, (matrix * s**2).sum() / total, (matrix.sum(1) ** 2).sum() / total**2,
            (matrix.sum(0) ** 2).sum() / total**2, total / n_voxels, (matrix / g**2).sum() / total,
            (matrix * g**2).sum() / total]


def glrlm_features(grey: np.ndarray, levels: int = LEVELS) -> list[float]:
    rows = [_size_matrix_features(run_length_matrix(grey, axis, levels), grey.size) for axis in range(grey.ndim)]
    return list(np.mean(rows, axis=0))


def size_zone_matrix(grey: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """GLSZM ``[levels, largest zone]``: entry (g, s-1) counts connected zones of level g and size s."""
    structure = ndimage.generate_binary_structure(grey.ndim, grey.ndim)
    zones: list[tuple[int, np.ndarray]] = []
    for level in np.unique(grey):
        labels, n = ndimage.label(grey == level, structure=structure)
        zones.append((int(level), np.bincount(labels.ravel())[1:]))
    largest = max(int(sizes.max()) for _, sizes in zones)
    matrix = np.zeros((levels, largest))
    for level, sizes in zones:
        np.add.at(matrix, (level, sizes - 1), 1)
    return matrix


def glszm_features(grey: np.ndarray, levels: int = LEVELS) -> list[float]:
    return _size_matrix_features(size_zone_matrix(grey, levels), grey.size)


def radiomics_features(image: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """The ``len(FEATURE_NAMES)`` features of one image ``[(D,) H, W]`` in [-1, 1]."""
    grey = quantise(image, levels)
    values = first_order_features(image, grey, levels) + glcm_features(grey, levels) + \
        glrlm_features(grey, levels) + glszm_features(grey, levels)
    return np.asarray(values, np.float64)


class RadiomicsExtractor(FeatureExtractor):
    """First-order + GLCM + GLRLM + GLSZM features of whole 3D volumes (see the module docstring)."""

    name = "radiomics"
    spatial_dims = 3
    standardise = True

    def extract(self, images: np.ndarray) -> np.ndarray:
        return np.stack([radiomics_features(image[0]) for image in np.asarray(images)])

    def describe(self) -> dict:
        return {**super().describe(), "features": list(FEATURE_NAMES), "grey_levels": LEVELS}


class Radiomics2DExtractor(RadiomicsExtractor):
    """The same features for 2D images."""

    name = "radiomics_2d"
    spatial_dims = 2


register_feature_extractor(RadiomicsExtractor.name, RadiomicsExtractor)
register_feature_extractor(Radiomics2DExtractor.name, Radiomics2DExtractor)
