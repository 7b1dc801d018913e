"""Evaluation plots: t-SNE by data source, intensity histograms, closest synthetic/training pairs."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from synthmed.fileio import atomic_savefig  # noqa: E402
from synthmed.sample.montage import central_slice  # noqa: E402

TSNE_PERPLEXITY = 10.0  # as in the thesis
TSNE_LEARNING_RATE = 200.0
EXACT_TSNE_MAX_N = 1000  # Barnes-Hut is far slower than the exact gradient for small sets


def save_tsne(path: str | os.PathLike, groups: dict[str, np.ndarray], title: str,
              perplexity: float = TSNE_PERPLEXITY, learning_rate: float = TSNE_LEARNING_RATE, seed: int = 0) -> Path:
    """t-SNE of the features of every group (``{"real": [N, F], "synthetic": [M, F]}``), coloured by group.

    Perplexity is capped below the sample count, as t-SNE requires.
    """
    names = list(groups)
    x = np.concatenate([groups[n] for n in names])
    source = np.concatenate([[i] * len(groups[n]) for i, n in enumerate(names)])
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    perplexity = min(perplexity, max(1.0, (len(x) - 1) / 3))
    embedded = TSNE(2, perplexity=perplexity, learning_rate=learning_rate, init="pca", random_state=seed,
                    method="exact" if len(x) <= EXACT_TSNE_MAX_N else "barnes_hut").fit_transform(x)
    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        for i, name in enumerate(names):
            pts = embedded[source == i]
            ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.7, label=f"{name} (n={len(pts)})")
        ax.set_title(f"{title}\nt-SNE, perplexity {perplexity:g}, learning rate {learning_rate:g}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8)
        return atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)


def save_histograms(path: str | os.PathLike, values: dict[str, np.ndarray], unit: str, bins: int = 100) -> Path:
    """Normalised voxel-intensity histograms of every set on shared bins."""
    lo = min(float(v.min()) for v in values.values())
    hi = max(float(v.max()) for v in values.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    try:
        for name, v in values.items():
            ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.4, label=f"{name} ({len(v)} voxels)")
        ax.set_xlabel(f"intensity ({unit})")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)


def save_closest_pairs(path: str | os.PathLike, pairs: list[tuple[str, np.ndarray, np.ndarray, str, np.ndarray, np.ndarray]]) -> Path:
    """One row per pair: synthetic image, its nearest training image, both masks (central axial slices).

    Args:
        pairs: ``(synthetic title, image [(D,) H, W], mask, training title, image, mask)`` per row.
    """
    fig, axes = plt.subplots(len(pairs), 4, figsize=(8, 2 * len(pairs)), squeeze=False)
    try:
        for row, (s_title, s_img, s_mask, t_title, t_img, t_mask) in enumerate(pairs):
            panels = [(s_title, *central_slice(s_img, s_mask)), (t_title, *central_slice(t_img, t_mask))]
            for col, (title, img, mask) in enumerate(panels):
                axes[row, 2 * col].imshow(img.T, cmap="gray", origin="lower")
                axes[row, 2 * col].set_title(title, fontsize=8)
                axes[row, 2 * col + 1].imshow(mask.T, cmap="viridis", origin="lower", interpolation="nearest")
                axes[row, 2 * col + 1].set_title("mask", fontsize=8)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        return atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)
