import hashlib

import numpy as np
import pytest
import torch

from synthmed.errors import UserError
from synthmed.metrics.diversity import ms_ssim_diversity, ms_ssim_settings
from synthmed.metrics.extractors import (
    FeatureExtractor,
    WeightsUnavailable,
    available_feature_extractors,
    build_feature_extractor,
    extract_features,
    look_up_feature_extractor,
    register_feature_extractor,
)
from synthmed.metrics.extractors.inception import resize_bilinear_tf1
from synthmed.metrics.extractors.radiomics import FEATURE_NAMES, glcm_features, quantise, texture_matrices
from synthmed.metrics.extractors.weights import WeightsSpec, fetch_weights


def test_registry_rejects_duplicates_and_non_extractors_and_suggests_names():
    assert {"inception", "medicalnet", "radiomics", "autoencoder"} <= set(available_feature_extractors())
    with pytest.raises(ValueError, match="already registered"):
        register_feature_extractor("radiomics", look_up_feature_extractor("radiomics"))
    with pytest.raises(TypeError, match="must subclass"):
        register_feature_extractor("nope", dict)
    with pytest.raises(UserError, match="Did you mean 'radiomics'"):
        look_up_feature_extractor("radiomic")


def test_every_extractor_declares_dims_and_maps_a_batch_to_n_by_f():
    for name in available_feature_extractors():
        cls = look_up_feature_extractor(name)
        assert cls.spatial_dims in (2, 3) and issubclass(cls, FeatureExtractor)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 1, 16, 16, 16)).astype(np.float32)
    radiomics = extract_features(build_feature_extractor("radiomics"), images)
    assert radiomics["volume"].shape == (3, len(FEATURE_NAMES))
    ae = build_feature_extractor("autoencoder", steps=2)
    ae.fit(images)
    assert extract_features(ae, images)["volume"].shape == (3, 256)
    medicalnet = build_feature_extractor("medicalnet", pretrained=False)
    assert extract_features(medicalnet, images)["volume"].shape == (3, 512)


@pytest.mark.slow
def test_inception_2p5d_gives_one_feature_space_per_plane():
    images = np.random.default_rng(1).uniform(-1, 1, (2, 1, 16, 16, 16)).astype(np.float32)
    views = extract_features(build_feature_extractor("inception", pretrained=False), images)
    assert set(views) == {"axial", "coronal", "sagittal"} and all(v.shape == (2, 2048) for v in views.values())


def test_tf1_bilinear_resize_matches_the_legacy_formula():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4)
    y = resize_bilinear_tf1(x, 8)  # TF1: source index = target * 4 / 8, clamped at the edge
    assert torch.allclose(y[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))


def test_radiomics_texture_features_on_known_images():
    checker = (np.indices((8, 8)).sum(0) % 2) * 2.0 - 0.99  # levels 0 and 15 alternate
    grey = quantise(checker)
    assert set(np.unique(grey)) == {0, 15}
    contrast = glcm_features(texture_matrices(grey))[0]
    assert contrast == pytest.approx((2 * 15**2 + 2 * 0) / 4)  # 2 of 4 directions change level by 15 each step
    flat = quantise(np.zeros((8, 8)))
    flat_textures = texture_matrices(flat)
    assert glcm_features(flat_textures)[0] == 0 and len(flat_textures.zone_sizes) == 1  # one zone, no contrast


def test_ms_ssim_adapts_to_small_volumes_and_ranks_diversity():
    kernel, weights = ms_ssim_settings((16, 16, 16))
    assert kernel == 3 and len(weights) == 3 and sum(weights) == pytest.approx(1)
    rng = np.random.default_rng(2)
    base = rng.uniform(-1, 1, (1, 1, 16, 16, 16)).astype(np.float32)
    collapsed = np.repeat(base, 6, axis=0) + rng.normal(0, 0.01, (6, 1, 16, 16, 16)).astype(np.float32)
    diverse = rng.uniform(-1, 1, (6, 1, 16, 16, 16)).astype(np.float32)
    assert ms_ssim_diversity(collapsed, 20)["mean"] > 0.9 > ms_ssim_diversity(diverse, 20)["mean"]
    with pytest.raises(UserError, match="too small"):
        ms_ssim_settings((2, 16, 16))


def test_weights_are_verified_and_missing_weights_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHMED_WEIGHTS", str(tmp_path))
    spec = WeightsSpec("w.pth", "http://127.0.0.1:9/none.pth", hashlib.sha256(b"good").hexdigest()[:8])
    with pytest.raises(WeightsUnavailable) as info:
        fetch_weights(spec, download=False)
    assert "\n" not in str(info.value) and "w.pth" in str(info.value)
    (tmp_path / "w.pth").write_bytes(b"bad")
    with pytest.raises(WeightsUnavailable, match="sha256 does not match"):
        fetch_weights(spec)
    (tmp_path / "w.pth").write_bytes(b"good")
    assert fetch_weights(spec) == tmp_path / "w.pth"
    with pytest.raises(WeightsUnavailable, match="download failed"):
        fetch_weights(WeightsSpec("other.pth", "http://127.0.0.1:9/none.pth", ""))
    assert not list(tmp_path.glob(".*partial"))
