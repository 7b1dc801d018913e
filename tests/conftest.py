"""Shared fixtures: tiny toy datasets (16³, made by `synthmed.data.toy`) in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset

# small and fast: 16³ cases, no resampling, 16³ output
TOY_OPTIONS = dict(shape=(16, 16, 16), spacing=None, test_fraction=0.2, val_fraction=0.1, folds=3)


@pytest.fixture(scope="session", autouse=True)
def no_user_feature_cache(tmp_path_factory):
    """`synthmed evaluate` caches real-set features under $SYNTHMED_CACHE: a session folder, never ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNTHMED_CACHE", str(tmp_path_factory.mktemp("synthmed_cache")))
        yield


@pytest.fixture
def toy_msd(tmp_path: Path) -> Path:
    """MSD folder (imagesTr/, labelsTr/, dataset.json) with 12 toy CT cases."""
    return write_toy_dataset(tmp_path / "toy_msd", layout="msd")


@pytest.fixture
def toy_folders(tmp_path: Path) -> Path:
    """Folder with images/ and labels/ holding the same 12 toy cases as `toy_msd`."""
    return write_toy_dataset(tmp_path / "toy_folders", layout="folders")


@pytest.fixture
def toy_datalist(tmp_path: Path) -> Path:
    """Datalist JSON file describing the same 12 toy cases as `toy_msd`."""
    return write_toy_dataset(tmp_path / "toy_datalist", layout="datalist")


@pytest.fixture
def toy_prepared(tmp_path: Path, toy_msd: Path) -> Path:
    """Prepared folder (manifest.json + cases/) of `toy_msd`; returns the manifest path."""
    return prepare_dataset([toy_msd], tmp_path / "prepared", PrepareOptions(**TOY_OPTIONS), progress=False)


@pytest.fixture
def toy_prepared_2d(tmp_path: Path) -> Path:
    """Prepared 2D folder: 24 grayscale 32x32 PNG toy cases (bright disc = label 1), 8-bit window 0..255,
    splits 17 train / 2 val / 5 test, 3 folds; returns the manifest path (see `synthmed.data.toy2d`)."""
    from synthmed.data.toy2d import prepare_toy_2d

    return prepare_toy_2d(tmp_path / "toy2d", n=24, size=32)


@pytest.fixture(scope="session")
def toy_prepared_with_val(tmp_path_factory) -> Path:
    """12 toy 16³ cases, 3 of them for validation (a fidelity figure against val needs at least 2)."""
    root = tmp_path_factory.mktemp("with_val")
    raw = write_toy_dataset(root / "raw", layout="msd")
    options = PrepareOptions(shape=(16, 16, 16), spacing=None, test_fraction=0.2, val_fraction=0.25, folds=0)
    return prepare_dataset([raw], root / "prepared", options, progress=False)


@pytest.fixture(scope="session")
def toy_pipeline(tmp_path_factory) -> dict[str, Path]:
    """Shared, read-only: a raw toy MSD folder, its prepared folder (and manifest path), a 4-step DCGAN run
    trained on it and a 6-pair synthetic set sampled from it. Tests copy what they damage."""
    from synthmed.sample.sampler import sample_to_folder
    from synthmed.train.config import resolve_config
    from synthmed.train.loop import train
    from tests.train.test_training import tiny_config

    root = tmp_path_factory.mktemp("pipeline")
    raw = write_toy_dataset(root / "raw", layout="msd")
    options = PrepareOptions(shape=(16, 16, 16), spacing=None, test_fraction=0.2, val_fraction=0.1, folds=0)
    manifest = prepare_dataset([raw], root / "prepared", options, progress=False)
    run = train(resolve_config(tiny_config(manifest, root / "run", steps=4)))
    return {"raw": raw, "manifest": manifest, "prepared": manifest.parent, "run": run, "root": root,
            "synthetic": sample_to_folder(run, 6, root / "synthetic")}
