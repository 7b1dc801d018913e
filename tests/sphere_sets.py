"""Toy synthetic sets of new sphere draws, in the layout `synthmed sample` writes (shared by test packages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthmed.data.manifest import load_manifest
from synthmed.data.toy import toy_case
from synthmed.sample.postprocess import images_to_network_units
from synthmed.sample.writers import reference_affine, write_synthetic_set


def write_sphere_set(out: Path, manifest_path: Path, n: int, trained_on: list[str] | None = None,
                     manifest_sha: str | None = None, seed: int = 7) -> Path:
    """A synthetic set of `n` toy spheres (not copies of the real cases) with a card claiming `trained_on`
    (default: the train split) and `manifest_sha` (default: the manifest's own hash)."""
    manifest = load_manifest(manifest_path)
    rng = np.random.default_rng(seed)
    shape = tuple(manifest.preprocessing["shape"])
    pairs = [toy_case(shape, rng.uniform(0.25, 0.4), rng) for _ in range(n)]
    intensity = manifest.preprocessing["intensity"]
    images = images_to_network_units(np.stack([p[0] for p in pairs])[:, None], intensity)
    masks = np.stack([p[1] for p in pairs]).astype(np.int64)
    card = {"format": "synthmed-card", "format_version": 1, "model": "toy",
            "checkpoint": {"path": "none", "sha256": "0" * 64},
            "manifest": {"sha256": manifest_sha or manifest.sha256},
            "trained_on_case_ids": sorted(trained_on if trained_on is not None else manifest.split_ids("train")),
            "seed": seed, "count": n}
    train_cases = [manifest.case(i) for i in manifest.split_ids("train")]
    return write_synthetic_set(out, images, masks, intensity=intensity,
                               labels={str(k): v for k, v in manifest.labels.items()},
                               affine=reference_affine(manifest.preprocessing, train_cases), modality="CT", card=card)
