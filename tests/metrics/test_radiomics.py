"""The hand-written radiomics against pyradiomics (the pyradiomics-bhklab build) on fixed images, and its workers."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from synthmed.metrics.extractors import build_feature_extractor
from synthmed.metrics.extractors import radiomics as rad

PYRADIOMICS_GLRLM = ("ShortRunEmphasis", "LongRunEmphasis", "GrayLevelNonUniformityNormalized",
                     "RunLengthNonUniformityNormalized", "RunPercentage", "LowGrayLevelRunEmphasis",
                     "HighGrayLevelRunEmphasis")
PYRADIOMICS_GLSZM = ("SmallAreaEmphasis", "LargeAreaEmphasis", "GrayLevelNonUniformityNormalized",
                     "SizeZoneNonUniformityNormalized", "ZonePercentage", "LowGrayLevelZoneEmphasis",
                     "HighGrayLevelZoneEmphasis")


def fixed_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values in [-1, 1) on a coarse grid (so runs and zones grow beyond one voxel), with -1 present."""
    x = np.floor(np.random.default_rng(seed).uniform(-1, 1, shape) * 4) / 4 + 0.01
    x.flat[0] = -1.0
    return x


def pyradiomics_features(cls_name: str, image: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    try:
        import SimpleITK as sitk
        from radiomics import glrlm, glszm
    except ImportError as e:
        pytest.skip(f"pyradiomics (pip install pyradiomics-bhklab, the 'frd' extra) cannot be imported: {e}")
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    cls = {"glrlm": glrlm.RadiomicsGLRLM, "glszm": glszm.RadiomicsGLSZM}[cls_name]
    features = cls(sitk.GetImageFromArray(image), sitk.GetImageFromArray(np.ones(image.shape, np.uint8)),
                   binWidth=2 / rad.LEVELS)
    features.execute()
    return np.array([float(features.featureValues[n]) for n in names])


@pytest.mark.parametrize("shape", [(9, 10, 11), (12, 13)])
def test_glrlm_matches_pyradiomics_over_13_or_4_directions(shape):
    image = fixed_image(shape, seed=len(shape))
    textures = rad.texture_matrices(rad.quantise(image))
    assert len(textures.glrlm) == (13 if len(shape) == 3 else 4)
    ours = rad.glrlm_features(textures)
    assert ours == pytest.approx(pyradiomics_features("glrlm", image, PYRADIOMICS_GLRLM), abs=1e-6, rel=0)


@pytest.mark.parametrize("shape", [(9, 10, 11), (12, 13)])
def test_glszm_matches_pyradiomics(shape):
    image = fixed_image(shape, seed=10 + len(shape))
    ours = rad.glszm_features(rad.texture_matrices(rad.quantise(image)))
    assert ours == pytest.approx(pyradiomics_features("glszm", image, PYRADIOMICS_GLSZM), abs=1e-6, rel=0)


def test_runs_of_a_known_image():
    stripes = np.zeros((4, 6), np.int64)
    stripes[:, 3:] = 5  # two 3-wide vertical bands of levels 0 and 5
    runs = rad.texture_matrices(stripes).glrlm
    along_rows = runs[[o for o in rad._offsets(2)].index((0, 1))]
    assert along_rows[0, 2] == 4 and along_rows[5, 2] == 4 and along_rows.sum() == 8  # 4 rows x 2 runs of 3
    along_columns = runs[rad._offsets(2).index((1, 0))]
    assert along_columns[0, 3] == 3 and along_columns[5, 3] == 3 and along_columns.sum() == 6  # 6 columns, runs of 4


def test_workers_give_the_same_features_as_one_process(monkeypatch):
    monkeypatch.setattr(rad.RadiomicsExtractor, "parallel_min_voxels", 0)
    images = np.random.default_rng(3).uniform(-1, 1, (3, 1, 12, 12, 12)).astype(np.float32)
    serial = build_feature_extractor("radiomics", workers=1).extract(images)
    parallel = build_feature_extractor("radiomics", workers=2).extract(images)
    assert np.array_equal(serial, parallel) and serial.shape == (3, len(rad.FEATURE_NAMES))


def test_frd_features_agree_with_the_hand_written_ones_where_they_overlap():
    pytest.importorskip("radiomics", reason="pyradiomics (pip install pyradiomics-bhklab, the 'frd' extra) cannot be imported")
    import SimpleITK as sitk
    from radiomics.imageoperations import normalizeImage

    from synthmed.metrics.extractors.frd import FRD_SETTINGS, frd_features

    image = np.random.default_rng(5).normal(0, 0.3, (24, 20)).clip(-1, 1)
    frd = frd_features(image)
    ours = rad.first_order_features(image, rad.quantise(image))
    # skewness and kurtosis ignore FRD's z-scoring; pyradiomics' kurtosis is not the excess one
    assert frd["original_firstorder_Skewness"] == pytest.approx(ours[2], rel=1e-6)
    assert frd["original_firstorder_Kurtosis"] == pytest.approx(ours[3] + 3, rel=1e-6)
    # the GLRLM on FRD's discretisation (z-scored x 100, bin width 5) through the hand-written code
    normalised = sitk.GetArrayFromImage(normalizeImage(sitk.GetImageFromArray(image), normalizeScale=FRD_SETTINGS["normalizeScale"]))
    width = FRD_SETTINGS["binWidth"]
    grey = (np.floor(normalised / width) - np.floor(normalised.min() / width)).astype(np.int64)
    glrlm = rad.glrlm_features(rad.texture_matrices(grey, int(grey.max()) + 1))
    assert glrlm == pytest.approx([frd[f"original_glrlm_{n}"] for n in PYRADIOMICS_GLRLM], abs=1e-6, rel=0)
    assert len([k for k in frd if k.startswith("wavelet-")]) > 0 and len([k for k in frd if k.startswith("log-sigma")]) > 0


@pytest.mark.slow  # ~30 s: pyradiomics filters every image 13 ways
def test_frd_feature_space_in_an_evaluation(toy_prepared_2d, tmp_path):
    pytest.importorskip("radiomics", reason="pyradiomics (pip install pyradiomics-bhklab, the 'frd' extra) cannot be imported")
    from synthmed.data.dataset import load_arrays
    from synthmed.data.manifest import load_manifest
    from synthmed.metrics.evaluate import EvaluateOptions, evaluate_synthetic_set
    from synthmed.sample.writers import write_synthetic_set

    manifest = load_manifest(toy_prepared_2d)
    ids = manifest.split_ids("train")[:6]
    images, masks = load_arrays(manifest, ids)
    syn = write_synthetic_set(tmp_path / "syn", np.clip(images + 0.3, -1, 1), masks, intensity=manifest.preprocessing["intensity"],
                              labels={str(k): v for k, v in manifest.labels.items()}, affine=None, modality="image",
                              card={"format": "synthmed-card", "format_version": 1, "trained_on_case_ids": ids})
    options = EvaluateOptions(features=("frd",), n_bootstrap=5, kid_subsets=5, workers=1, update_card=False)
    doc = evaluate_synthetic_set(f"{toy_prepared_2d}:val", syn, tmp_path / "eval", options)
    assert doc["feature_spaces"]["frd"]["name"] == "frd_2d" and doc["feature_spaces"]["frd"]["settings"]["binWidth"] == 5
    assert doc["images"]["frd_2d/volume"]["synthetic_vs_real"]["frechet_distance"]["value"] > 0
