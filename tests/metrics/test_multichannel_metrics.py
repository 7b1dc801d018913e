"""Multi-channel images in evaluate: which feature spaces are per channel or stacked, and what they compute."""

import numpy as np
import pytest

from synthmed.errors import UserError
from synthmed.metrics.channels import ChannelFeatures, channel_names_of, channel_spaces
from synthmed.metrics.extractors.base import build_feature_extractor

FEATURES = {"radiomics": "radiomics", "autoencoder": "autoencoder"}


def test_auto_stacks_where_the_extractor_takes_channels_and_splits_the_rest():
    spaces = channel_spaces(FEATURES, ["FLAIR", "T1w"], "auto")
    assert spaces == {"radiomics[FLAIR]": ("radiomics", [0], "channel 0 (FLAIR)"),
                      "radiomics[T1w]": ("radiomics", [1], "channel 1 (T1w)"),
                      "autoencoder": ("autoencoder", None, "stacked (2 channels in)")}
    assert set(channel_spaces(FEATURES, ["FLAIR", "T1w"], "per_channel")) == {
        "radiomics[FLAIR]", "radiomics[T1w]", "autoencoder[FLAIR]", "autoencoder[T1w]"}
    stacked = channel_spaces(FEATURES, ["FLAIR", "T1w"], "stacked")
    assert stacked["radiomics"][1:] == ([0, 1], "stacked (2 per-channel feature sets concatenated)")
    assert channel_spaces(FEATURES, ["CT"], "per_channel")["radiomics"] == ("radiomics", None, "single channel")
    with pytest.raises(UserError, match="channels must be one of auto, per_channel, stacked"):
        channel_spaces(FEATURES, ["CT"], "both")


def test_channel_features_are_each_channels_own_features_side_by_side():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, 2, 8, 8, 8)).astype(np.float32)
    images[:, 1] = np.clip(images[:, 1] * 0.2 + 0.5, -1, 1)  # another contrast in channel 1
    radiomics = build_feature_extractor("radiomics")
    both = ChannelFeatures(lambda: build_feature_extractor("radiomics"), [0, 1]).extract(images)
    one = ChannelFeatures(lambda: build_feature_extractor("radiomics"), [1]).extract(images)
    expected = np.concatenate([radiomics.extract(images[:, :1]), radiomics.extract(images[:, 1:])], axis=1)
    assert np.allclose(both, expected) and np.allclose(one, expected[:, expected.shape[1] // 2:])
    assert not np.allclose(expected[:, : expected.shape[1] // 2], expected[:, expected.shape[1] // 2:])


def test_channel_names_come_from_the_manifest():
    assert channel_names_of({"modality": ["FLAIR", "T1w"]}, 2) == ["FLAIR", "T1w"]
    assert channel_names_of({"modality": ["CT", "CT"]}, 2) == ["CT_0", "CT_1"]
    assert channel_names_of({"modality": "MRI"}, 1) == ["MRI"]
