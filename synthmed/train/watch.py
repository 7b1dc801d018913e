"""Watching a run: sample grids of a fixed seed set, and the protocol of a periodic fidelity monitor.

Every ``train.sample_every`` steps the EMA generator draws the pairs of seeds ``0..sample_count-1``
(`GenerativeModel.sample_seeds`, so the grid shows the same latents over the run) and `sample_grid`
renders them: 2D images as they are, 3D volumes as their three central slices side by side, masks
overlaid in colour. The trainer writes the grid to TensorBoard (tag ``samples``) and to
``samples/step_XXXXXXXX.png``.

The fidelity figure itself is measured by the metrics stage, which ranks above train: the trainer takes
a `MonitorFactory` (``synthmed train`` passes `synthmed.metrics.monitor.fidelity_monitor`) and calls the
`TrainingMonitor` it builds; this module only defines what they answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import torch

from synthmed.models.base import GenerativeModel

if TYPE_CHECKING:
    from synthmed.data.manifest import Manifest
    from synthmed.train.config import RunConfig

OVERLAY_ALPHA = 0.45  # opacity of the mask colour over the image
GRID_COLUMNS = 8
GAP, GAP_GREY = 2, 128  # grey lines between pairs (a 3D pair's slices are parted by a black line)
LABEL_COLOURS = np.array([  # label 1, 2, ... (cycled); matplotlib's tab10 without its grey
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207)], dtype=np.float32)


@dataclass(frozen=True)
class MonitorContext:
    """What a monitor factory gets from the trainer: the run's configuration, its manifest and the
    training cases it already loaded (network units: images in [-1, 1] [N, C, *S], masks [N, *S])."""

    config: RunConfig
    manifest: Manifest
    train_images: np.ndarray
    train_masks: np.ndarray


class TrainingMonitor(Protocol):
    """A periodic figure of a run's generator; the trainer keeps ``checkpoints/best.pt`` by its ``key``."""

    key: str  # the entry of `measure`'s result that picks the best checkpoint (lower is better)

    def measure(self, model: GenerativeModel, step: int) -> dict[str, float]:
        """Figures of the model at ``step`` (logged to metrics.jsonl and TensorBoard under their keys)."""
        ...


MonitorFactory = Callable[[MonitorContext], TrainingMonitor]


@torch.no_grad()
def draw_fixed_pairs(model: GenerativeModel, count: int, masks: np.ndarray | None = None,
                     batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The EMA generator's pairs of seeds ``0..count-1`` (images [N, C, *S] in [-1, 1], masks [N, *S]).

    A mask-conditional model renders images for ``masks`` (cycled to ``count``); it needs them.
    """
    given = None
    if model.capabilities.mask_conditional:
        if masks is None or not len(masks):
            raise ValueError("a mask-conditional model needs masks to render images for")
        given = torch.from_numpy(np.asarray(masks)[np.arange(count) % len(masks)]).long()
    images, labels = model.sample_seeds(list(range(count)), batch_size=batch_size, masks=given)
    return images.float().numpy(), labels.numpy()


def sample_grid(images: np.ndarray, masks: np.ndarray, columns: int = GRID_COLUMNS) -> np.ndarray:
    """One RGB uint8 picture [H, W, 3] of pairs: channel 0 of each image in grey with its mask in colour.

    Images [N, C, *S] in [-1, 1] (C may be 0: a mask-only model, shown on black), masks [N, *S], 2D or 3D
    (3D: the central slice across each axis, side by side), ``columns`` pairs a row.
    """
    tiles = [np.pad(_overlay(picture, mask), ((0, GAP), (0, GAP), (0, 0)), constant_values=GAP_GREY)
             for picture, mask in _views(images, masks)]
    height, width = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, width - t.shape[1]), (0, 0))) for t in tiles]
    rows = [np.concatenate(tiles[i : i + columns] + [np.zeros_like(tiles[0])] * (columns - len(tiles[i : i + columns])),
                           axis=1) for i in range(0, len(tiles), columns)]
    if len(rows) == 1:  # a single short row: no empty padding tiles
        rows = [np.concatenate(tiles, axis=1)]
    return np.concatenate(rows, axis=0)


def _views(arrays: np.ndarray, masks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(channel-0 picture [a, b], mask [a, b]) per pair; a 3D pair is its three central slices joined."""
    out = []
    for array, mask in zip(arrays, masks):
        first = array[0] if array.shape[0] else np.full(mask.shape, -1.0, np.float32)
        if mask.ndim == 2:
            out.append((first, mask))
            continue
        slices = [(np.take(first, s // 2, axis=a), np.take(mask, s // 2, axis=a)) for a, s in enumerate(mask.shape)]
        height = max(p.shape[0] for p, _ in slices)
        padded = [(np.pad(p, ((0, height - p.shape[0]), (0, 1)), constant_values=-1.0),
                   np.pad(m, ((0, height - m.shape[0]), (0, 1))))
                  for p, m in slices]
        out.append((np.concatenate([p for p, _ in padded], axis=1), np.concatenate([m for _, m in padded], axis=1)))
    return out


def _overlay(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8 of a picture in [-1, 1] in grey, each label's voxels blended with its colour."""
    grey = np.clip((picture + 1.0) * 127.5, 0, 255).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    foreground = mask > 0
    colours = LABEL_COLOURS[(np.maximum(mask, 1) - 1) % len(LABEL_COLOURS)]
    rgb[foreground] = (1 - OVERLAY_ALPHA) * rgb[foreground] + OVERLAY_ALPHA * colours[foreground]
    return np.rint(rgb).astype(np.uint8)
