"""MS-SSIM diversity: mean MS-SSIM over random pairs within one set (lower = more diverse).

MONAI's MultiScaleSSIMMetric with its defaults (kernel 11, 5 scales) needs every dimension > 160.
For small volumes the kernel shrinks to 3 and the number of scales to the most that fit
(``size // 2**(scales-1) > kernel - 1``); the first scale weights are kept and renormalised.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric

from synthmed.errors import UserError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
DEFAULT_KERNEL = 11
SMALL_KERNEL = 3
DATA_RANGE = 2.0  # images in [-1, 1]
N_PAIRS = 100


def ms_ssim_settings(shape: tuple[int, ...]) -> tuple[int, tuple[float, ...]]:
    """(kernel size, scale weights) that MONAI accepts for spatial `shape`.

    Raises:
        UserError: the image is too small for even one scale with a 3-voxel kernel.
    """
    smallest = min(shape)
    if smallest // 2 ** (len(MS_SSIM_WEIGHTS) - 1) > DEFAULT_KERNEL - 1:
        return DEFAULT_KERNEL, MS_SSIM_WEIGHTS
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        if smallest // 2 ** (scales - 1) > SMALL_KERNEL - 1:
            w = np.asarray(MS_SSIM_WEIGHTS[:scales])
            return SMALL_KERNEL, tuple(float(v) for v in w / w.sum())
    raise UserError(f"MS-SSIM: images of shape {list(shape)} are too small (every side must exceed {SMALL_KERNEL - 1})")


def ms_ssim_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MS-SSIM of each pair ``(a[i], b[i])`` of images ``[N, C, *spatial]`` in [-1, 1]."""
    kernel, weights = ms_ssim_settings(a.shape[2:])
    metric = MultiScaleSSIMMetric(spatial_dims=a.ndim - 2, data_range=DATA_RANGE, kernel_size=kernel,
                                  weights=weights, reduction="none")
    values = metric(torch.from_numpy(np.asarray(a, np.float32)), torch.from_numpy(np.asarray(b, np.float32)))
    return values.reshape(len(a)).numpy().astype(np.float64)


def ms_ssim_diversity(images: np.ndarray, n_pairs: int = N_PAIRS, seed: int = 0) -> dict[str, float | int]:
    """Mean and std of MS-SSIM over up to `n_pairs` random distinct pairs of one set.

    Raises:
        UserError: fewer than 2 images.
    """
    images = np.asarray(images, np.float32)
    if len(images) < 2:
        raise UserError(f"MS-SSIM diversity: need at least 2 images, got {len(images)}")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(images), n_pairs)
    j = (i + rng.integers(1, len(images), n_pairs)) % len(images)  # never i itself
    values = ms_ssim_pairs(images[i], images[j])
    return {"mean": float(values.mean()), "std": float(values.std()), "pairs": int(n_pairs)}
