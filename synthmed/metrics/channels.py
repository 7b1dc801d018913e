"""Multi-channel images in evaluation: each feature space per channel or stacked, as the user chooses.

``EvaluateOptions.channels``:
- ``"auto"`` (default): an extractor that takes C input channels (``takes_channels``: the autoencoder)
  sees them stacked; the others (radiomics, MedicalNet, Inception: one grey channel) are computed per
  channel, one feature space each, named ``<space>[<channel name>]``.
- ``"per_channel"``: every feature space per channel.
- ``"stacked"``: one feature space over all channels: the C-channel input where the extractor takes
  it, else the per-channel features concatenated (``[N, C x F]``).

Intensity distributions are always per channel: the channels have their own units. Single-channel
images are unchanged (one space, named as before).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from synthmed.errors import UserError
from synthmed.metrics.extractors.base import FeatureExtractor, look_up_feature_extractor

CHANNEL_MODES = ("auto", "per_channel", "stacked")
TAKES_CHANNELS = ("autoencoder", "autoencoder_2d")  # extractors whose networks take C input channels


def check_channel_mode(mode: str) -> None:
    """Raises: UserError for a mode other than `CHANNEL_MODES`."""
    if mode not in CHANNEL_MODES:
        raise UserError(f"evaluate: channels must be one of {', '.join(CHANNEL_MODES)}, got {mode!r}")


def takes_channels(name: str) -> bool:
    """Whether the registered extractor `name` takes C input channels (else it reads one grey channel)."""
    return look_up_feature_extractor(name).name in TAKES_CHANNELS


def channel_spaces(
    features: dict[str, str], channel_names: list[str], mode: str
) -> dict[str, tuple[str, list[int] | None, str]]:
    """The feature spaces to compute: ``{shown name: (extractor name, channels, how)}``.

    `channels` None means the extractor sees the images as they are; a list means those channels, one
    at a time, their features concatenated. `how` says which, for metrics.json: "single channel",
    "stacked (C channels in)", "stacked (per-channel features concatenated)" or "channel NAME".
    """
    check_channel_mode(mode)
    n = len(channel_names)
    spaces: dict[str, tuple[str, list[int] | None, str]] = {}
    for name, built in features.items():
        stacked_in = takes_channels(built)
        if n == 1:
            spaces[name] = (built, None, "single channel")
        elif mode == "stacked" or (mode == "auto" and stacked_in):
            spaces[name] = (built, None, f"stacked ({n} channels in)") if stacked_in else \
                (built, list(range(n)), f"stacked ({n} per-channel feature sets concatenated)")
        else:
            for c, channel in enumerate(channel_names):
                spaces[f"{name}[{channel}]"] = (built, [c], f"channel {c} ({channel})")
    return spaces


class ChannelFeatures(FeatureExtractor):
    """An extractor applied to chosen channels one at a time (its own fitted copy per channel), the
    features of those channels concatenated."""

    standardise = False

    def __init__(self, make: Callable[[], FeatureExtractor], channels: list[int]):
        self.inner = [make() for _ in channels]
        self.channels = channels
        first = self.inner[0]
        self.name, self.spatial_dims = first.name, first.spatial_dims
        self.needs_fit, self.standardise = first.needs_fit, first.standardise

    def fit(self, images: np.ndarray, seed: int = 0) -> None:
        for extractor, c in zip(self.inner, self.channels):
            extractor.fit(np.asarray(images)[:, c : c + 1], seed=seed)

    def extract(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [e.extract(np.asarray(images)[:, c : c + 1]) for e, c in zip(self.inner, self.channels)], axis=1
        )

    def describe(self) -> dict[str, Any]:
        return {**self.inner[0].describe(), "channels_used": self.channels}

    def __getattr__(self, attr: str) -> Any:  # e.g. Inception's extract_logits, on the first channel
        if attr == "inner":
            raise AttributeError(attr)
        inner = self.inner[0]
        value = getattr(inner, attr)
        if attr == "extract_logits":
            c = self.channels[0]
            return lambda images: value(np.asarray(images)[:, c : c + 1])
        return value


def channel_names_of(preprocessing: dict[str, Any], n_channels: int) -> list[str]:
    """The names of the image channels (the manifest's per-channel modality), else ``channel_0`` ..."""
    modality = preprocessing.get("modality")
    if isinstance(modality, list) and len(modality) == n_channels:
        names = [str(m) for m in modality]
        if len(set(names)) == n_channels:
            return names
        return [f"{m}_{c}" for c, m in enumerate(names)]
    if n_channels == 1:
        return [str(modality or "image")]
    return [f"channel_{c}" for c in range(n_channels)]
