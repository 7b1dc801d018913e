"""A GAN must be shown to learn: on a toy distribution its samples must move towards the data's."""

import numpy as np
import pytest

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.models.registry import DataInfo, build_model
from synthmed.sample.sampler import sample_arrays
from synthmed.train.config import resolve_config
from synthmed.train.loop import train


def statistics(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean foreground volume (voxels) and mean intensity inside the mask."""
    foreground = masks > 0
    return {
        "volume": float(foreground.sum(axis=(1, 2, 3)).mean()),
        "intensity_inside": float(images[:, 0][foreground].mean()) if foreground.any() else 0.0,
        "intensity_outside": float(images[:, 0][~foreground].mean()),
    }


@pytest.mark.slow
def test_dcgan_learns_the_bright_sphere(tmp_path):
    # Toy data: a bright sphere of random radius at the centre of a dark volume, with its mask.
    raw = write_toy_dataset(tmp_path / "raw", n_cases=32, shape=(16, 16, 16), seed=1)
    options = PrepareOptions(shape=(16, 16, 16), test_fraction=0.1, val_fraction=0.0, folds=0, margin=0)
    manifest = load_manifest(prepare_dataset([raw], tmp_path / "prepared", options, progress=False))
    real = statistics(*load_arrays(manifest, manifest.split_ids("train")))

    config = resolve_config({
        "model": {"name": "dcgan3d", "params": {"latent_dim": 16, "base_channels": 8, "max_channels": 32}},
        "data": {"manifest": str(manifest.root)},
        "optim": {"G": {"lr": 1e-3, "betas": [0.5, 0.999]}, "D": {"lr": 5e-4, "betas": [0.5, 0.999]}},
        "train": {"steps": 250, "batch_size": 8, "ema_kimg": 0.1, "log_every": 50, "checkpoint_every": 250, "progress": False},
        "out": str(tmp_path / "run"),
    })
    untrained = build_model("dcgan3d", config.model.params, DataInfo((16, 16, 16), 1, 3))
    before = statistics(*(t.numpy() for t in untrained.sample(32, seed=0)))
    after = statistics(*sample_arrays(train(config), 32, seed=0))

    for key in real:
        error_before, error_after = abs(before[key] - real[key]), abs(after[key] - real[key])
        assert error_after < 0.3 * error_before, (key, real[key], before[key], after[key])
