"""The real side of an evaluation: a prepared manifest split (``MANIFEST[:split]``) or a folder of pairs.

A folder of pairs (nnU-Net-like ``imagesTr/`` + ``labelsTr/``, or ``images/`` + ``masks/``; NIfTI or
PNG) has no manifest, so what the manifest would say is derived from the files: the shape (every case
must share the first one's), the labels (dataset.json's ``labels`` when present, else the values in
the masks) and an intensity window that maps the real voxels to the network range [-1, 1] (the
0.5th to 99.5th percentile of every real voxel for NIfTI; the full level range for PNG). The synthetic
set is mapped with the same window. All its cases are the real set; there is no train/test split, so
the real-vs-real reference figures are unavailable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import Manifest, parse_real_spec
from synthmed.errors import UserError
from synthmed.sample.postprocess import images_to_network_units
from synthmed.sample.synthetic_set import (
    PAIR_IMAGE_DIR,
    PAIR_MASK_DIRS,
    load_synthetic_set,
    recorded_png_range,
    synthetic_case_files,
)

FOLDER_PERCENTILES = (0.5, 99.5)
Pair = tuple[np.ndarray, np.ndarray]  # images in [-1, 1] [N, C, *S], masks [N, *S]


@dataclass
class RealSource:
    """What the evaluation needs to know of the real cases, whichever form they came in."""

    root: Path  # never written: the output may not overlap it
    preprocessing: dict[str, Any]  # intensity, shape, dims, spacing, modality (a manifest's, or derived)
    labels: dict[int, str]
    description: dict[str, Any]  # metrics.json "real", without "n"
    split: str | None  # None: a folder of pairs (no splits)
    manifest: Manifest | None = None
    folder_pairs: Pair | None = None  # a folder's cases, already in [-1, 1]
    folder_ids: list[str] | None = None

    @property
    def label_values(self) -> dict[int, int]:
        """Class index -> the source's label value (a manifest's remapping; a folder's values are its own)."""
        return self.manifest.label_values if self.manifest is not None else {k: k for k in self.labels}

    @property
    def dims(self) -> int:
        return int(self.preprocessing.get("dims", len(self.preprocessing["shape"])))

    def case_ids(self) -> set[str]:
        return set(self.folder_ids) if self.manifest is None else {c["id"] for c in self.manifest.cases}

    def load(self, train_ids: list[str]) -> tuple[Pair, Pair, Pair, list[str]]:
        """(real, train, test, train ids): the chosen split, the generator's training cases (`train_ids`
        that exist here; else the train split, or a folder's every case) and the real test cases.

        Raises:
            UserError: fewer than 2 real cases.
        """
        if self.manifest is None:
            images, masks = self.folder_pairs
            keep = [i for i, c in enumerate(self.folder_ids) if c in set(train_ids)] or list(range(len(masks)))
            empty = (images[:0], masks[:0])
            return (images, masks), (images[keep], masks[keep]), empty, [self.folder_ids[i] for i in keep]
        manifest = self.manifest
        train_ids = [i for i in train_ids if i in self.case_ids()] or manifest.split_ids("train")
        real_ids = manifest.split_ids(self.split)
        if len(real_ids) < 2:
            raise UserError(f"{manifest.path}: split {self.split!r} has {len(real_ids)} case(s); at least 2 needed")
        return (load_arrays(manifest, real_ids), load_arrays(manifest, train_ids),
                load_arrays(manifest, manifest.split_ids("test")), train_ids)


def is_pair_folder(path: Path) -> bool:
    """A folder of image/mask pairs rather than a prepared folder (which holds manifest.json)."""
    return path.is_dir() and not (path / "manifest.json").exists() and (
        ((path / "imagesTr").is_dir() and (path / "labelsTr").is_dir())
        or ((path / PAIR_IMAGE_DIR).is_dir() and any((path / d).is_dir() for d in PAIR_MASK_DIRS)))


def load_real_source(spec: str) -> RealSource:
    """``MANIFEST[:split]`` or a folder of pairs.

    Raises:
        UserError: an unknown split, an unreadable manifest, or a folder of pairs that cannot be read
            (see `load_synthetic_set`), has fewer than 2 cases or mixes shapes.
    """
    if is_pair_folder(Path(spec)):
        return _folder_source(Path(spec))
    manifest, split = parse_real_spec(spec)
    return RealSource(root=manifest.root, preprocessing=manifest.preprocessing, labels=manifest.labels,
                      description={"manifest": str(manifest.path), "manifest_sha256": manifest.sha256, "split": split},
                      split=split, manifest=manifest)


def _folder_source(folder: Path) -> RealSource:
    ids = [case_id for case_id, _, _ in synthetic_case_files(folder)]
    images, masks, _ = load_synthetic_set(folder, None)  # NIfTI in stored units, PNG as levels
    if len(masks) < 2:
        raise UserError(f"--real {folder}: {len(masks)} case(s); at least 2 needed")
    is_png = any(p.name.lower().endswith(".png") for _, _, p in synthetic_case_files(folder)[:1])
    if is_png:
        lo, hi = recorded_png_range(folder) or (0.0, 65535.0 if images.max() > 255 else 255.0)
    else:
        lo, hi = (float(v) for v in np.percentile(images, FOLDER_PERCENTILES))
        hi = hi if hi > lo else lo + 1.0  # a constant set: any window keeps it constant
    intensity = {"mode": "window", "lo": lo, "hi": hi}
    preprocessing = {"intensity": intensity, "shape": list(masks.shape[1:]), "dims": masks.ndim - 1,
                     "spacing": None, "modality": ""}
    description = {"folder": str(folder.resolve()), "split": None, "intensity_window": [lo, hi],
                   "intensity_note": "PNG levels" if is_png else
                   f"{FOLDER_PERCENTILES[0]}th-{FOLDER_PERCENTILES[1]}th percentile of the real voxels -> [-1, 1]"}
    return RealSource(root=folder, preprocessing=preprocessing, labels=_folder_labels(folder, masks),
                      description=description, split=None,
                      folder_pairs=(images_to_network_units(images, intensity), masks), folder_ids=ids)


def _folder_labels(folder: Path, masks: np.ndarray) -> dict[int, str]:
    """dataset.json's labels ({name: value} as nnU-Net v2, or {value: name}), else the mask values."""
    try:
        labels = json.loads((folder / "dataset.json").read_text())["labels"]
        pairs = [(int(v), str(k)) if not str(k).lstrip("-").isdigit() else (int(k), str(v)) for k, v in labels.items()]
        return dict(sorted(pairs))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        values = sorted(set(np.unique(masks).tolist()) | {0})
        return {int(v): "background" if v == 0 else f"label_{v}" for v in values}
