"""Names of every figure in ``metrics.json``, so that readers (report, card, tests) share one spelling."""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


class MetricKey(StrEnum):
    FRECHET = "frechet_distance"
    KID_MEAN = "kid_mean"
    KID_STD = "kid_std"
    IS_MEAN = "inception_score_mean"
    IS_STD = "inception_score_std"
    PRECISION = "precision"
    RECALL = "recall"
    DENSITY = "density"
    COVERAGE = "coverage"
    MS_SSIM = "ms_ssim"
    WASSERSTEIN = "wasserstein"
    FRACTION_FLAGGED = "fraction_flagged"


class Modality(StrEnum):
    IMAGES = "images"
    MASKS = "masks"


class Comparison(StrEnum):
    SYNTHETIC = "synthetic_vs_real"  # the figure of interest
    REFERENCE = "real_train_vs_real_test"  # the same figure between two real sets, for scale
