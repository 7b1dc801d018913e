"""The fidelity figure a training run logs over time (``train.fidelity_every``) and picks ``best.pt`` by.

At every measurement the EMA generator draws the pairs of the fixed seeds ``0..samples-1``
(`synthmed.train.watch.draw_fixed_pairs`; a mask-conditional model renders them for the real validation
masks), and `FidelityMonitor` gives KID (or FD) of their images against the real validation split in each
configured feature space, named ``fidelity/<metric>_<space>`` (e.g. ``fidelity/kid_autoencoder``).
The autoencoder space is fitted once on the training split when the run starts (seeded by
``train.seed``); radiomics features are z-scored on the training split's (constant ones dropped, as in
``evaluate``). The real features are computed once. Lower is better.
"""

from __future__ import annotations

import numpy as np

from synthmed.data.dataset import load_arrays
from synthmed.errors import UserError
from synthmed.metrics.distances import frechet_distance, kernel_inception_distance
from synthmed.metrics.extractors import build_feature_extractor, extract_features
from synthmed.metrics.extractors.base import FeatureExtractor
from synthmed.models.base import GenerativeModel
from synthmed.train.watch import MonitorContext, draw_fixed_pairs

KID_SUBSETS = 20  # fewer than evaluate's 100: the monitor runs many times per run
KID_SUBSET_SIZE = 1000  # capped by the set sizes (see kernel_inception_distance)


def as_images(images: np.ndarray, masks: np.ndarray, num_labels: int) -> np.ndarray:
    """What the feature spaces see of a pair set: the images, or for a mask-only set its masks scaled to [-1, 1]."""
    if images.shape[1]:
        return images.astype(np.float32, copy=False)
    return (masks[:, None].astype(np.float32) / max(num_labels - 1, 1)) * 2 - 1


class FeatureSpace:
    """One feature space with the real validation features computed (and standardised) once."""

    def __init__(self, name: str, train_images: np.ndarray, real_images: np.ndarray, seed: int, ae_steps: int) -> None:
        built = name if real_images.ndim == 5 else f"{name}_2d"
        kwargs = {"steps": ae_steps} if name == "autoencoder" else {}
        self.extractor: FeatureExtractor = build_feature_extractor(built, **kwargs)
        if self.extractor.needs_fit:
            self.extractor.fit(train_images, seed=seed)
        real = self._features(real_images)
        self.keep = np.ones(real.shape[1], bool)
        self.mean, self.std = np.zeros(real.shape[1]), np.ones(real.shape[1])
        if self.extractor.standardise:  # on the train split, as evaluate does: more cases than validation
            reference = self._features(train_images)
            mean, std = reference.mean(0), reference.std(0)
            self.keep = std > 1e-6 * (1.0 + np.abs(mean))
            self.mean, self.std = mean, np.where(self.keep, std, 1.0)
        self.real = self.project(real)

    def _features(self, images: np.ndarray) -> np.ndarray:
        (features,) = extract_features(self.extractor, images).values()  # whole-volume (or whole-image) view
        return features

    def project(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std)[:, self.keep]

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.project(self._features(images))


class FidelityMonitor:
    """`synthmed.train.watch.TrainingMonitor` measuring KID or FD against the real validation split."""

    def __init__(self, context: MonitorContext) -> None:
        config, manifest = context.config, context.manifest
        self.settings = config.train.fidelity
        val_ids = manifest.split_ids("val")
        if len(val_ids) < 2:
            raise UserError(f"train.fidelity_every: the validation split of {manifest.path} has {len(val_ids)} "
                            "case(s); the fidelity figure needs at least 2 (prepare with a larger val fraction)")
        self.num_labels = len(manifest.labels)
        val_images, self.val_masks = load_arrays(manifest, val_ids)
        real = as_images(val_images, self.val_masks, self.num_labels)
        train = as_images(context.train_images, context.train_masks, self.num_labels)
        self.spaces = {name: FeatureSpace(name, train, real, config.train.seed, self.settings.autoencoder_steps)
                       for name in self.settings.spaces}
        self.key = self.figure_key(self.settings.spaces[0])
        self.samples = self.settings.samples

    def figure_key(self, space: str) -> str:
        return f"fidelity/{self.settings.metric}_{space}"

    def measure(self, model: GenerativeModel, step: int) -> dict[str, float]:
        images, masks = draw_fixed_pairs(model, self.samples, self.val_masks)
        fake = as_images(images, masks, self.num_labels)
        return {self.figure_key(name): self.distance(space.features(fake), space.real)
                for name, space in self.spaces.items()}

    def distance(self, fake: np.ndarray, real: np.ndarray) -> float:
        if not np.isfinite(fake).all():  # a diverged generator: no figure, never the best
            return float("nan")
        if self.settings.metric == "fd":
            return frechet_distance(fake, real)
        return kernel_inception_distance(fake, real, KID_SUBSETS, KID_SUBSET_SIZE, seed=0).mean


def fidelity_monitor(context: MonitorContext) -> FidelityMonitor:
    """The `synthmed.train.watch.MonitorFactory` that ``synthmed train`` and `synthmed.train` pass to the trainer."""
    return FidelityMonitor(context)
