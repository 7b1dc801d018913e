"""The published Fréchet Radiomics Distance feature set (FRD v1, Konz, Osuala et al., arXiv 2412.01496),
computed by pyradiomics (the ``pyradiomics-bhklab`` build: ``pip install 'synthmed[frd]'``).

Settings of FRD v1's extraction: image types Original, LoG (sigma 2, 3, 4, 5 mm) and Wavelet (every
sub-band); feature classes first order, GLCM (22 features, as FRD lists them), GLRLM, GLSZM and NGTDM;
the image z-scored and scaled by 100 (``normalize``), ``binWidth`` 5, ``voxelArrayShift`` 300. FRD's
in-plane resampling to 2 mm is left out: the prepared cases are already on one grid. The mask is the
whole image. The Fréchet distance of these features, z-scored on the real set (``standardise``), is
FRD; features that are NaN or constant on the real cases are dropped, as FRD does.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from synthmed.metrics.extractors.base import WeightsUnavailable, register_feature_extractor
from synthmed.metrics.extractors.radiomics import RadiomicsExtractor

FRD_GLCM = ("Autocorrelation", "JointAverage", "ClusterProminence", "ClusterShade", "ClusterTendency", "Contrast",
            "Correlation", "DifferenceAverage", "DifferenceEntropy", "DifferenceVariance", "JointEnergy", "JointEntropy",
            "Imc1", "Imc2", "Idm", "Idmn", "Id", "Idn", "InverseVariance", "MaximumProbability", "SumEntropy", "SumSquares")
FRD_SETTINGS: dict[str, Any] = {"normalize": True, "normalizeScale": 100, "binWidth": 5, "voxelArrayShift": 300,
                                "label": 1, "additionalInfo": False}
FRD_IMAGE_TYPES: dict[str, dict] = {"Original": {}, "LoG": {"sigma": [2.0, 3.0, 4.0, 5.0]}, "Wavelet": {}}
FRD_CLASSES: dict[str, list[str]] = {"firstorder": [], "glcm": list(FRD_GLCM), "glrlm": [], "glszm": [], "ngtdm": []}


def pyradiomics_version() -> str:
    """The installed pyradiomics version.

    Raises:
        WeightsUnavailable: pyradiomics cannot be imported (one line naming the extra to install).
    """
    try:
        import radiomics
    except ImportError as e:
        raise WeightsUnavailable(f"the frd feature space needs pyradiomics: pip install 'synthmed[frd]' "
                                 f"(pyradiomics-bhklab) ({e})") from None
    return str(radiomics.__version__)


def frd_extractor():
    """A pyradiomics RadiomicsFeatureExtractor with FRD v1's settings."""
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(**FRD_SETTINGS)
    extractor.disableAllImageTypes()
    for image_type, options in FRD_IMAGE_TYPES.items():
        extractor.enableImageTypeByName(image_type, customArgs=options)
    extractor.disableAllFeatures()
    extractor.enableFeaturesByName(**FRD_CLASSES)
    return extractor


def frd_features(image: np.ndarray) -> dict[str, float]:
    """{pyradiomics feature name: value} of one image ``[(D,) H, W]`` over the whole image."""
    import SimpleITK as sitk

    values = frd_extractor().execute(sitk.GetImageFromArray(np.asarray(image, np.float64)),
                                     sitk.GetImageFromArray(np.ones(image.shape, np.uint8)))
    return {k: float(v) for k, v in values.items() if not k.startswith("diagnostics_")}


def frd_feature_vector(image: np.ndarray) -> np.ndarray:
    """`frd_features` in name order (the order is the same for every image of one shape)."""
    features = frd_features(image)
    return np.array([features[k] for k in sorted(features)], np.float64)


class FRDExtractor(RadiomicsExtractor):
    """FRD v1 radiomics of whole 3D volumes through pyradiomics (slow: filters and 4 texture classes per image)."""

    name = "frd"
    spatial_dims = 3
    version = 1
    compute = staticmethod(frd_feature_vector)
    parallel_min_voxels = 0  # pyradiomics takes seconds per image: worth a worker even for small ones

    def __init__(self, workers: int | None = None):
        self.pyradiomics = pyradiomics_version()
        super().__init__(workers)

    def describe(self) -> dict:
        return {"name": self.name, "spatial_dims": self.spatial_dims, "definition": "FRD v1 (arXiv 2412.01496)",
                "pyradiomics": self.pyradiomics, "settings": FRD_SETTINGS, "image_types": FRD_IMAGE_TYPES,
                "feature_classes": FRD_CLASSES, "version": self.version}


class FRD2DExtractor(FRDExtractor):
    """The same for 2D images (FRD v1's own setting)."""

    name = "frd_2d"
    spatial_dims = 2


register_feature_extractor(FRDExtractor.name, FRDExtractor)
register_feature_extractor(FRD2DExtractor.name, FRD2DExtractor)
