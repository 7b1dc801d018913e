"""The fidelity monitor's figure: zero-ish for the real set itself, larger for a shifted one; its refusals."""

import numpy as np
import pytest

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.metrics.distances import frechet_distance
from synthmed.metrics.monitor import FeatureSpace, FidelityMonitor, as_images
from synthmed.train.config import resolve_config
from synthmed.train.watch import MonitorContext
from tests.train.test_training import tiny_config


def context(manifest, tmp_path, **fidelity):
    config = tiny_config(manifest, tmp_path / "run")
    config["train"].update({"fidelity_every": 2, "fidelity": {"autoencoder_steps": 5, **fidelity}})
    m = load_manifest(manifest)
    images, masks = load_arrays(m, m.split_ids("train"))
    return MonitorContext(resolve_config(config), m, images, masks)


def test_the_real_validation_set_is_close_to_itself_and_far_from_a_shifted_copy(toy_prepared_with_val, tmp_path):
    """Known answers: FD of the validation features against themselves is 0; brightening them moves it up."""
    ctx = context(toy_prepared_with_val, tmp_path, metric="fd", spaces=["radiomics", "autoencoder"])
    monitor = FidelityMonitor(ctx)
    val_images, val_masks = load_arrays(ctx.manifest, ctx.manifest.split_ids("val"))
    assert len(val_images) == 3
    for name, space in monitor.spaces.items():
        own = space.features(as_images(val_images, val_masks, monitor.num_labels))
        assert monitor.distance(own, space.real) == pytest.approx(0.0, abs=1e-6)
        shifted = space.features(np.clip(val_images + 0.5, -1, 1))
        assert monitor.distance(shifted, space.real) > 1e-3
        assert monitor.distance(shifted, space.real) == pytest.approx(frechet_distance(shifted, space.real))
        assert np.isnan(monitor.distance(np.full_like(shifted, np.nan), space.real))  # diverged: no figure
    assert monitor.key == "fidelity/fd_radiomics"


def test_radiomics_features_are_standardised_on_the_training_set_without_constant_ones():
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)
    space = FeatureSpace("radiomics", train, train[:3], seed=0, ae_steps=1)
    on_train = space.features(train)
    assert np.allclose(on_train.mean(0), 0, atol=1e-9) and np.allclose(on_train.std(0), 1, atol=1e-9)
    assert space.real.shape == (3, int(space.keep.sum())) and space.keep.sum() > 5


def test_a_validation_split_under_two_cases_is_refused(toy_prepared, tmp_path):
    # the toy fixture's 12 cases at val_fraction 0.1 leave a single validation case
    with pytest.raises(UserError, match="validation split .* needs at least 2"):
        FidelityMonitor(context(toy_prepared, tmp_path))
