"""Feature extractors for the evaluation metrics; see `base` for the registry."""

from synthmed.metrics.extractors.base import (
    FeatureExtractor,
    WeightsUnavailable,
    available_feature_extractors,
    build_feature_extractor,
    extract_features,
    look_up_feature_extractor,
    register_feature_extractor,
)

__all__ = [
    "FeatureExtractor",
    "WeightsUnavailable",
    "available_feature_extractors",
    "build_feature_extractor",
    "extract_features",
    "look_up_feature_extractor",
    "register_feature_extractor",
]
