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
    F_SCORE = "f_score"  # harmonic mean of precision and recall, as torch-fidelity's prc reports
    DENSITY = "density"
    COVERAGE = "coverage"
    MS_SSIM = "ms_ssim"
    WASSERSTEIN = "wasserstein"
    FRACTION_FLAGGED = "fraction_flagged"


# Our key -> torch-fidelity's name for the same figure (torch_fidelity.calculate_metrics' result keys).
# torch-fidelity names the Fréchet distance and KID after Inception whatever the feature extractor;
# only the `inception` feature space computes what its defaults compute.
TORCH_FIDELITY_NAMES = {
    MetricKey.FRECHET: "frechet_inception_distance",
    MetricKey.KID_MEAN: "kernel_inception_distance_mean",
    MetricKey.KID_STD: "kernel_inception_distance_std",
    MetricKey.IS_MEAN: "inception_score_mean",
    MetricKey.IS_STD: "inception_score_std",
    MetricKey.PRECISION: "precision",
    MetricKey.RECALL: "recall",
    MetricKey.F_SCORE: "f_score",
}


class Modality(StrEnum):
    IMAGES = "images"
    MASKS = "masks"


class Comparison(StrEnum):
    SYNTHETIC = "synthetic_vs_real"  # the figure of interest
    REFERENCE = "real_train_vs_real_test"  # the same figure between two real sets, for scale
