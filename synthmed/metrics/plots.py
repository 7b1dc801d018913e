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
from matplotlib.patches import Patch  # noqa: E402

from synthmed.sample.montage import display_pair, label_colour, label_rgb  # noqa: E402

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


def save_closest_pairs(path: str | os.PathLike, pairs: list[tuple[str, np.ndarray, np.ndarray, str, np.ndarray, np.ndarray]],
                       num_labels: int | None = None) -> Path:
    """One row per pair: synthetic image, its nearest training image, both masks (central axial slices for 3D).

    Images are oriented as in the montage (`display_pair`: 2D as stored, RGB in colour); masks are
    drawn with one fixed colour per label in every panel (`label_rgb`), with a legend.

    Args:
        pairs: ``(synthetic title, image [C, (D,) H, W], mask [(D,) H, W], training title, image, mask)`` per row.
        num_labels: labels 0..num_labels-1 in the legend (default: those drawn).
    """
    fig, axes = plt.subplots(len(pairs), 4, figsize=(8, 2 * len(pairs) + 0.4), squeeze=False)
    try:
        drawn: set[int] = set()
        for row, (s_title, s_img, s_mask, t_title, t_img, t_mask) in enumerate(pairs):
            for col, (title, img, mask) in enumerate(((s_title, s_img, s_mask), (t_title, t_img, t_mask))):
                pixels, mask_slice, origin = display_pair(np.asarray(img), np.asarray(mask))
                axes[row, 2 * col].imshow(pixels, cmap="gray", origin=origin, interpolation="nearest")
                axes[row, 2 * col].set_title(title, fontsize=8)
                axes[row, 2 * col + 1].imshow(label_rgb(mask_slice), origin=origin, interpolation="nearest")
                axes[row, 2 * col + 1].set_title("mask", fontsize=8)
                drawn |= {int(v) for v in np.unique(mask_slice) if v > 0}
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        shown = range(1, num_labels) if num_labels else sorted(drawn)
        handles = [Patch(color=label_colour(v), label=f"label {v}") for v in shown]
        if handles:
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.04 if handles else 0, 1, 1))
        return atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)
