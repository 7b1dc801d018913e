"""Feature extractors: each maps a batch of images ``[N, C, (D,) H, W]`` in [-1, 1] to features ``[N, F]``.

An extractor declares ``spatial_dims`` (2 or 3). A 2D extractor is applied to 3D volumes as 2.5D:
slices along each of the three axes (axial, coronal, sagittal, as MAISI does), one feature space per
plane, the slice features of a volume averaged (see `extract_features`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from synthmed.errors import UserError, unknown_name_message

PLANES = ("sagittal", "coronal", "axial")  # plane normal to array axis 0, 1, 2 (RAS: R, A, S)
SLICES_PER_PLANE = 3
SLICE_SPAN = (0.25, 0.75)  # slices taken between these fractions of the axis (the central half)
WHOLE_VOLUME = "volume"


class WeightsUnavailable(Exception):
    """Pretrained weights are missing and cannot be downloaded; the message is one line for the user."""


class FeatureExtractor(ABC):
    """Base class of every registered extractor."""

    name: ClassVar[str] = ""
    spatial_dims: ClassVar[int] = 0  # 2 or 3
    needs_fit: ClassVar[bool] = False  # True: call fit(real train images) before extract
    standardise: ClassVar[bool] = False  # True: features have unrelated units; z-score them on the real set
    uses_device: ClassVar[bool] = False  # True: a torch network; the constructor takes ``device``
    version: ClassVar[int] = 1  # bump when the features change: it is part of the feature cache's key

    def fit(self, images: np.ndarray, seed: int = 0) -> None:
        """Learn from real training images ``[N, C, *spatial]`` (only when ``needs_fit``)."""

    @abstractmethod
    def extract(self, images: np.ndarray) -> np.ndarray:
        """Features ``[N, F]`` (float) of images ``[N, C, *spatial]`` in [-1, 1] with the declared spatial_dims."""

    def describe(self) -> dict[str, Any]:
        """What to record in metrics.json about this feature space."""
        return {"name": self.name, "spatial_dims": self.spatial_dims}


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """"cpu" or "cuda" for ``--device auto|cpu|cuda`` (auto: cuda when torch sees a GPU).

    Raises:
        UserError: an unknown name, or cuda asked for where torch sees no GPU.
    """
    import torch

    if device not in DEVICES:
        raise UserError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); use --device cpu or auto")
    return device


_EXTRACTORS: dict[str, type[FeatureExtractor]] = {}


def register_feature_extractor(name: str, cls: type[FeatureExtractor]) -> None:
    """Register `cls` under `name`.

    Raises:
        ValueError: the name is taken. TypeError: `cls` is not a FeatureExtractor subclass or declares
            spatial_dims other than 2 or 3.
    """
    if name in _EXTRACTORS:
        raise ValueError(f"feature extractor {name!r} is already registered")
    if not (isinstance(cls, type) and issubclass(cls, FeatureExtractor)):
        raise TypeError(f"feature extractor {name!r} must subclass FeatureExtractor, got {cls!r}")
    if cls.spatial_dims not in (2, 3):
        raise TypeError(f"feature extractor {name!r} must declare spatial_dims 2 or 3, got {cls.spatial_dims}")
    _EXTRACTORS[name] = cls


def available_feature_extractors() -> list[str]:
    _import_builtin()
    return sorted(_EXTRACTORS)


def look_up_feature_extractor(name: str) -> type[FeatureExtractor]:
    """The registered class.

    Raises:
        UserError: unknown name, with the closest match and the list of available names.
    """
    _import_builtin()
    if name in _EXTRACTORS:
        return _EXTRACTORS[name]
    raise UserError(unknown_name_message("feature space", name, _EXTRACTORS))


def build_feature_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    return look_up_feature_extractor(name)(**kwargs)


def volume_slices(volumes: np.ndarray, axis: int, count: int = SLICES_PER_PLANE) -> np.ndarray:
    """`count` evenly spaced slices from the central half of `axis` of ``[N, C, D, H, W]``: ``[N, count, C, a, b]``."""
    size = volumes.shape[2 + axis]
    index = np.unique(np.round(np.linspace(*SLICE_SPAN, count) * (size - 1)).astype(int))
    return np.stack([np.take(volumes, i, axis=2 + axis) for i in index], axis=1)


def extract_features(extractor: FeatureExtractor, images: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Features of `images` ``[N, C, *spatial]`` per view: ``{"volume": [N, F]}`` or one entry per plane (2.5D).

    Raises:
        UserError: images are neither 2D nor 3D, or a 3D extractor is given 2D images.
    """
    images = np.asarray(images, np.float32)
    data_dims = images.ndim - 2
    if data_dims not in (2, 3):
        raise UserError(f"feature extraction: expected images [N, C, (D,) H, W], got shape {list(images.shape)}")
    if extractor.spatial_dims == data_dims:
        return {WHOLE_VOLUME: _batched(extractor, images, batch_size)}
    if extractor.spatial_dims == 3:
        raise UserError(f"feature space {extractor.name!r} is 3D and cannot describe 2D images")
    views = {}
    for axis, plane in enumerate(PLANES):
        slices = volume_slices(images, axis)  # [N, S, C, a, b]
        n, s = slices.shape[:2]
        flat = _batched(extractor, slices.reshape(n * s, *slices.shape[2:]), batch_size)
        views[plane] = flat.reshape(n, s, -1).mean(axis=1)
    return views


def _batched(extractor: FeatureExtractor, images: np.ndarray, batch_size: int) -> np.ndarray:
    parts = [extractor.extract(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 0))


def _import_builtin() -> None:
    # Importing a module registers its extractors.
    from synthmed.metrics.extractors import autoencoder, frd, inception, medicalnet, radiomics  # noqa: F401
