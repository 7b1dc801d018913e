"""Weight-free radiomics features for a Fréchet Radiomics Distance (Konz et al., 2024).

Computed with numpy / scikit-image over the whole image (2D or 3D), after quantising [-1, 1] into
``LEVELS`` fixed-width grey levels (bin width 2 / LEVELS = 0.125, fixed edges at -1 + k x 0.125, so an
intensity shift between sets stays visible). Definitions follow pyradiomics / IBSI:

- first order (16): mean, standard deviation, skewness, kurtosis, 10/25/50/75/90th percentiles,
  interquartile range, range, mean absolute deviation, robust mean absolute deviation (10-90th),
  root mean square, entropy and uniformity of the grey-level histogram;
- GLCM (10), symmetric, distance 1, averaged over the 13 (3D) or 4 (2D) directions: contrast,
  dissimilarity, homogeneity (inverse difference), angular second moment, joint entropy,
  correlation, cluster shade, cluster prominence, maximum probability, joint average;
- GLRLM (7), runs along the same 13 (3D) or 4 (2D) directions, features per direction averaged
  (pyradiomics' default): short- and long-run emphasis, grey-level and run-length non-uniformity
  (normalised), run percentage, low and high grey-level run emphasis. They equal pyradiomics'
  (``binWidth=0.125``, whole-image mask) to rounding whenever the image's lowest value lies in the
  bin [-1, -0.875): pyradiomics numbers grey levels from the image's own minimum bin, which shifts
  the two grey-level emphases otherwise (tests/metrics/test_radiomics.py);
- GLSZM (7), zones connected over the full neighbourhood: small- and large-area emphasis, grey-level
  and size-zone non-uniformity (normalised), zone percentage, low and high grey-level zone emphasis.

The texture matrices are computed once per image (`texture_matrices`). The 40 features have
unrelated units, so the evaluation z-scores them on the real set (``standardise``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import weakref
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from synthmed.errors import UserError
from synthmed.metrics.extractors.base import FeatureExtractor, register_feature_extractor

LEVELS = 16
PARALLEL_MIN_VOXELS = 2**21  # a batch smaller than one 128^3 volume stays in this process (spawning costs ~1 s)

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
    mean = x.mean()
    centred = x - mean
    squared = centred * centred
    m2, m3, m4 = squared.mean(), (squared * centred).mean(), (squared * squared).mean()
    flat = m2 == 0  # skewness and kurtosis are undefined for a constant image; call them 0
    skewness = 0.0 if flat else m3 / m2**1.5  # biased moments, as scipy.stats.skew / kurtosis (Fisher) by default
    kurtosis = 0.0 if flat else m4 / m2**2 - 3.0
    return [mean, np.sqrt(m2), skewness, kurtosis, p10, p25, p50, p75, p90, p75 - p25, np.ptp(x), np.abs(centred).mean(),
            np.abs(robust - robust.mean()).mean(), np.sqrt((x**2).mean()), _entropy(hist), (hist**2).sum()]


def _offsets(ndim: int) -> list[tuple[int, ...]]:
    """One of each pair of opposite unit neighbour offsets: 13 in 3D, 4 in 2D (pyradiomics' angles at distance 1)."""
    all_offsets = [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]
    return [o for o in all_offsets if o > tuple(-v for v in o)]


def _pair_slices(shape: tuple[int, ...], offset: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(source, destination) slices: voxel p of the source region has neighbour p + offset in the destination."""
    src = tuple(slice(max(0, -o), n - max(0, o)) for n, o in zip(shape, offset))
    dst = tuple(slice(max(0, o), n - max(0, -o)) for n, o in zip(shape, offset))
    return src, dst


@dataclass
class Textures:
    """The texture matrices of one quantised image, computed once and shared by the feature families.

    ``glcm[d]``: symmetric co-occurrence counts ``[levels, levels]`` of direction d; ``glrlm[d]``: run
    counts ``[levels, longest line]`` (entry (g, r-1): runs of level g and length r along direction d);
    ``zone_levels`` / ``zone_sizes``: grey level and voxel count of every connected zone (GLSZM, kept
    sparse: a flat background is one zone of millions of voxels).
    """

    glcm: list[np.ndarray]
    glrlm: list[np.ndarray]
    zone_levels: np.ndarray
    zone_sizes: np.ndarray
    n_voxels: int


def _run_lengths(grey: np.ndarray, same: np.ndarray, offset: tuple[int, ...], levels: int) -> np.ndarray:
    """GLRLM of one direction from ``same`` (voxel equals its neighbour at +offset, False at the border).

    Follows every run from its first voxel one step at a time; the total work is one step per voxel.
    """
    starts = np.ones(grey.shape, bool)
    src, dst = _pair_slices(grey.shape, offset)
    starts[dst] = ~same[src]  # a voxel starts a run unless its -offset neighbour has its level
    step = int(np.dot(offset, np.array(grey.strides) // grey.itemsize))
    matrix = np.zeros((levels, max(grey.shape)))
    matrix[:, 0] = np.bincount(grey[starts & ~same], minlength=levels)  # runs of one voxel, without following them
    flat_same = same.ravel()
    position = np.flatnonzero(starts & same).astype(np.int32 if grey.size < 2**31 else np.int64)  # int32: less memory traffic
    level = grey.ravel()[position]
    position += step
    length = 1
    while position.size:
        going_on = flat_same[position]
        matrix[:, length] += np.bincount(level[~going_on], minlength=levels)
        position, level, length = position[going_on] + step, level[going_on], length + 1
    return matrix


def texture_matrices(grey: np.ndarray, levels: int = LEVELS) -> Textures:
    """GLCM and GLRLM over every direction (one pass of neighbour pairs each) and the GLSZM zones of `grey`."""
    from skimage.measure import label

    code_type = np.uint8 if levels * levels <= 256 else np.uint16 if levels * levels <= 65536 else np.int64
    grey = np.ascontiguousarray(grey, dtype=code_type)  # small integers: less memory traffic per direction
    glcm, glrlm = [], []
    for offset in _offsets(grey.ndim):
        src, dst = _pair_slices(grey.shape, offset)
        a, b = grey[src], grey[dst]
        counts = np.bincount((a * code_type(levels) + b).ravel(), minlength=levels * levels).reshape(levels, levels)
        glcm.append((counts + counts.T).astype(np.float64))
        same = np.zeros(grey.shape, bool)
        same[src] = a == b
        glrlm.append(_run_lengths(grey, same, offset, levels))
    zones = label(grey, background=-1, connectivity=grey.ndim)  # equal-level zones over the full neighbourhood
    zone_sizes = np.bincount(zones.ravel())[1:]
    zone_levels = np.zeros(len(zone_sizes) + 1, np.int64)
    zone_levels[zones.ravel()] = grey.ravel()
    return Textures(glcm, glrlm, zone_levels[1:], zone_sizes, grey.size)


def glcm_features(textures: Textures, levels: int = LEVELS) -> list[float]:
    """The 10 GLCM features of every direction, averaged over directions (pyradiomics' default)."""
    i, j = np.meshgrid(np.arange(levels) + 1.0, np.arange(levels) + 1.0, indexing="ij")
    rows = []
    for m in textures.glcm:
        p = m / max(m.sum(), 1.0)
        mu_i, mu_j = (p * i).sum(), (p * j).sum()
        sd_i, sd_j = np.sqrt((p * (i - mu_i) ** 2).sum()), np.sqrt((p * (j - mu_j) ** 2).sum())
        corr = (p * (i - mu_i) * (j - mu_j)).sum() / (sd_i * sd_j) if sd_i * sd_j > 0 else 1.0
        rows.append([(p * (i - j) ** 2).sum(), (p * np.abs(i - j)).sum(), (p / (1 + np.abs(i - j))).sum(),
                     (p**2).sum(), _entropy(p.ravel()), corr, (p * (i + j - mu_i - mu_j) ** 3).sum(),
                     (p * (i + j - mu_i - mu_j) ** 4).sum(), p.max(), mu_i])
    return list(np.mean(rows, axis=0))


def _size_features(level: np.ndarray, size: np.ndarray, count: np.ndarray, n_voxels: int) -> list[float]:
    """The 7 shared GLRLM/GLSZM features of sparse entries: `count` runs (zones) of grey index `level`, length `size`."""
    total = count.sum()
    g, s = level + 1.0, size.astype(np.float64)
    per_level = np.bincount(level, weights=count)
    per_size = np.bincount(size, weights=count)
    return [(count / s**2).sum() / total, (count * s**2).sum() / total, (per_level**2).sum() / total**2,
            (per_size**2).sum() / total**2, total / n_voxels, (count / g**2).sum() / total, (count * g**2).sum() / total]


def glrlm_features(textures: Textures) -> list[float]:
    """The 7 GLRLM features of every direction, averaged over the 13 (3D) or 4 (2D) directions as pyradiomics does."""
    rows = []
    for matrix in textures.glrlm:
        level, run = np.nonzero(matrix)
        rows.append(_size_features(level, run + 1, matrix[level, run], textures.n_voxels))
    return list(np.mean(rows, axis=0))


def glszm_features(textures: Textures) -> list[float]:
    return _size_features(textures.zone_levels, textures.zone_sizes, np.ones(len(textures.zone_sizes)), textures.n_voxels)


def radiomics_features(image: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """The ``len(FEATURE_NAMES)`` features of one image ``[(D,) H, W]`` in [-1, 1]."""
    grey = quantise(image, levels)
    textures = texture_matrices(grey, levels)
    values = first_order_features(image, grey, levels) + glcm_features(textures, levels) + \
        glrlm_features(textures) + glszm_features(textures)
    return np.asarray(values, np.float64)


def default_workers() -> int:
    """Worker processes for radiomics: the CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class RadiomicsExtractor(FeatureExtractor):
    """First-order + GLCM + GLRLM + GLSZM features of whole 3D volumes (see the module docstring).

    Volumes are spread over `workers` processes when a batch is large enough to pay for them
    (``parallel_min_voxels``); the pool lives as long as the extractor.
    """

    name = "radiomics"
    spatial_dims = 3
    standardise = True
    version = 2  # 2: GLRLM over 13 (3D) / 4 (2D) directions, as pyradiomics; 1 had 3 axes
    compute = staticmethod(radiomics_features)  # features of one image (module-level: picklable for the workers)
    parallel_min_voxels = PARALLEL_MIN_VOXELS

    def __init__(self, workers: int | None = None):
        if workers is not None and workers < 1:
            raise UserError(f"radiomics: workers must be >= 1, got {workers}")
        self.workers = workers or default_workers()
        self._pool: ProcessPoolExecutor | None = None

    def extract(self, images: np.ndarray) -> np.ndarray:
        volumes = [image[0] for image in np.asarray(images)]
        if self.workers > 1 and len(volumes) > 1 and volumes[0].size * len(volumes) >= self.parallel_min_voxels:
            return np.stack(list(self._worker_pool().map(self.compute, volumes)))
        return np.stack([self.compute(v) for v in volumes])

    def _worker_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:  # spawn: no copy of a parent's torch threads or open files
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            weakref.finalize(self, self._pool.shutdown)
        return self._pool

    def describe(self) -> dict:
        return {**super().describe(), "features": list(FEATURE_NAMES), "grey_levels": LEVELS,
                "bin_width": 2 / LEVELS, "directions": len(_offsets(self.spatial_dims)), "version": self.version}


class Radiomics2DExtractor(RadiomicsExtractor):
    """The same features for 2D images."""

    name = "radiomics_2d"
    spatial_dims = 2


register_feature_extractor(RadiomicsExtractor.name, RadiomicsExtractor)
register_feature_extractor(Radiomics2DExtractor.name, Radiomics2DExtractor)
