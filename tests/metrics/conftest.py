"""Fixtures: a synthetic-set folder made from real toy cases (copies, noisy copies, shifted cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.sample.writers import reference_affine, write_synthetic_set


def make_synthetic_set(manifest_path: Path, out: Path, ids: list[str], noise: float = 0.0, shift: float = 0.0,
                       seed: int = 0) -> Path:
    """Write the cases `ids` (plus Gaussian noise and an intensity shift, in [-1, 1] units) as a synthetic set."""
    manifest = load_manifest(manifest_path)
    images, masks = load_arrays(manifest, ids)
    rng = np.random.default_rng(seed)
    images = np.clip(images + shift + rng.normal(0, noise, images.shape) if noise or shift else images, -1, 1)
    train = manifest.split_ids("train")
    card = {"format": "synthmed-card", "format_version": 1, "trained_on_case_ids": sorted(train), "metrics": {},
            "privacy_check": None}
    affine = reference_affine(manifest.preprocessing, [manifest.case(i) for i in train])
    return write_synthetic_set(out, images.astype(np.float32), masks, intensity=manifest.preprocessing["intensity"],
                               labels={str(k): v for k, v in manifest.labels.items()}, affine=affine, modality="CT",
                               card=card)


@pytest.fixture(autouse=True)
def private_feature_cache(tmp_path: Path, monkeypatch) -> Path:
    """Every test gets its own empty feature cache (never the user's ~/.cache)."""
    monkeypatch.setenv("SYNTHMED_CACHE", str(tmp_path / "synthmed_cache"))
    return tmp_path / "synthmed_cache" / "features"


@pytest.fixture
def copied_set(toy_prepared: Path, tmp_path: Path) -> Path:
    """A 'synthetic' set that is exactly the training cases: the audit must flag every sample."""
    ids = load_manifest(toy_prepared).split_ids("train")
    return make_synthetic_set(toy_prepared, tmp_path / "copied", ids)
