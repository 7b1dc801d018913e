"""`synthmed evaluate` on sets made elsewhere: card-less folders of pairs, PNGs from another tool, a real
folder instead of a manifest; --device; the real-set feature cache; torch-fidelity's key names."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.metrics.evaluate import EvaluateOptions, evaluate_synthetic_set, format_table
from synthmed.metrics.extractors import radiomics
from synthmed.sample.postprocess import images_to_original_units

FAST = dict(features=("radiomics",), ae_steps=5, n_bootstrap=10, kid_subsets=10, download_weights=False, workers=1)
SPACE = "radiomics/volume"


def write_nifti_pairs(folder: Path, images: np.ndarray, masks: np.ndarray, layout: str = "images_masks") -> Path:
    """Pairs as another tool writes them: images/ + masks/ (same names) or imagesTr/ + labelsTr/ (nnU-Net)."""
    image_dir, mask_dir = ("images", "masks") if layout == "images_masks" else ("imagesTr", "labelsTr")
    (folder / image_dir).mkdir(parents=True)
    (folder / mask_dir).mkdir()
    for i, (image, mask) in enumerate(zip(images, masks)):
        name = f"maisi_{i:03d}"
        image_name = f"{name}.nii.gz" if layout == "images_masks" else f"{name}_0000.nii.gz"
        nib.save(nib.Nifti1Image(image[0].astype(np.float32), np.eye(4)), folder / image_dir / image_name)
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), folder / mask_dir / f"{name}.nii.gz")
    return folder


def real_cases_in_original_units(manifest_path: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    manifest = load_manifest(manifest_path)
    images, masks = load_arrays(manifest, manifest.split_ids(split))
    return images_to_original_units(images, manifest.preprocessing["intensity"]), masks


def test_a_card_less_nifti_folder_of_another_tool_is_evaluated_and_says_what_it_skipped(toy_prepared, tmp_path):
    images, masks = real_cases_in_original_units(toy_prepared)
    syn = write_nifti_pairs(tmp_path / "maisi", images, masks)
    doc = evaluate_synthetic_set(str(toy_prepared), syn, tmp_path / "eval", EvaluateOptions(**FAST))
    assert doc["card"]["status"] == "missing" and "no card.json" in doc["memorisation"]["skipped"]
    assert "memorisation: skipped (no card.json" in format_table(doc)
    figures = doc["images"][SPACE]["synthetic_vs_real"]
    assert figures["frechet_distance"]["n_synthetic"] == len(masks)
    assert figures["frechet_distance"]["value"] == pytest.approx(0, abs=1e-6)  # the real train cases themselves
    assert not (syn / "card.json").exists()


def test_pngs_from_another_tool_rgb_and_0_255_masks(toy_prepared_2d, tmp_path):
    manifest = load_manifest(toy_prepared_2d)
    images, masks = load_arrays(manifest, manifest.split_ids("train"))
    folder = tmp_path / "medigan"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, (image, mask) in enumerate(zip(images, masks)):
        levels = np.round((image[0] + 1) / 2 * 255).astype(np.uint8)  # the full PNG range = the prepared [-1, 1]
        Image.fromarray(np.stack([levels] * 3, -1)).save(folder / "images" / f"s{i}.png")  # grey stored as RGB
        Image.fromarray((mask > 0).astype(np.uint8) * 255).save(folder / "masks" / f"s{i}.png")
    doc = evaluate_synthetic_set(str(toy_prepared_2d), folder, tmp_path / "eval", EvaluateOptions(**FAST))
    assert doc["synthetic"]["n"] == len(masks) and doc["card"]["status"] == "missing"
    assert doc["images"]["radiomics_2d/volume"]["synthetic_vs_real"]["frechet_distance"]["value"] < 1e-3
    assert doc["mask_statistics"]["n_synthetic"] == len(masks)
    assert doc["masks"]["radiomics_2d/volume"]["synthetic_vs_real"]["frechet_distance"]["value"] == pytest.approx(0, abs=1e-6)
    assert doc["intensity"]["wasserstein"]["all"]["value"] < 1.0  # 8-bit window: rounding only


def test_the_real_side_can_be_a_folder_too(toy_prepared, tmp_path):
    images, masks = real_cases_in_original_units(toy_prepared)
    real = write_nifti_pairs(tmp_path / "real", images, masks, layout="nnunet")
    near = write_nifti_pairs(tmp_path / "near", images + 1.0, masks)
    far = write_nifti_pairs(tmp_path / "far", images + 200.0, masks)
    docs = [evaluate_synthetic_set(str(real), s, tmp_path / f"eval_{s.name}", EvaluateOptions(**FAST)) for s in (near, far)]
    assert docs[0]["real"]["folder"] == str(real.resolve()) and docs[0]["real"]["n"] == len(masks)
    assert "unavailable" in docs[0]["images"][SPACE]["real_train_vs_real_test"]  # a folder has no test split
    fd = [d["images"][SPACE]["synthetic_vs_real"]["frechet_distance"]["value"] for d in docs]
    assert fd[0] < fd[1]
    assert "folder" in format_table(docs[0])


def test_a_folder_that_is_no_set_and_a_pair_without_its_mask_are_refused(toy_prepared, tmp_path):
    images, masks = real_cases_in_original_units(toy_prepared)
    syn = write_nifti_pairs(tmp_path / "syn", images, masks)
    (syn / "masks" / "maisi_001.nii.gz").unlink()
    with pytest.raises(UserError, match=r"masks/maisi_001.nii.gz: mask missing for image maisi_001.nii.gz"):
        evaluate_synthetic_set(str(toy_prepared), syn, tmp_path / "out", EvaluateOptions(**FAST))
    (tmp_path / "loose").mkdir()
    with pytest.raises(UserError, match="images/ and masks/ with matching file names"):
        evaluate_synthetic_set(str(toy_prepared), tmp_path / "loose", tmp_path / "out", EvaluateOptions(**FAST))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # four evaluations (~20 s on the busy 2-core machine)
def test_feature_cache_is_hit_on_the_second_run_and_invalidated_by_a_changed_file(toy_prepared, tmp_path, monkeypatch):
    extracted = []
    original = radiomics.RadiomicsExtractor.extract
    monkeypatch.setattr(radiomics.RadiomicsExtractor, "extract", lambda self, x: extracted.append(len(x)) or original(self, x))
    images, masks = real_cases_in_original_units(toy_prepared)
    real = write_nifti_pairs(tmp_path / "real", images, masks)
    syn = write_nifti_pairs(tmp_path / "syn", images[:4] + 5.0, masks[:4])
    options = EvaluateOptions(**{**FAST, "cache_dir": str(tmp_path / "cache")})
    n_real, n_syn = len(masks), 4

    def run(name: str) -> dict:
        extracted.clear()
        return evaluate_synthetic_set(str(real), syn, tmp_path / name, options)

    first = run("first")  # images and masks: real (= train) and synthetic extracted; train found in the cache
    assert sum(extracted) == 2 * (n_real + n_syn) and first["feature_cache"]["misses"] == 2
    second = run("second")
    assert sum(extracted) == 2 * n_syn and second["feature_cache"]["misses"] == 0
    assert second["images"][SPACE] == first["images"][SPACE]
    changed = real / "images" / "maisi_000.nii.gz"
    nib.save(nib.Nifti1Image(images[0, 0] + 50.0, np.eye(4)), changed)
    third = run("third")
    assert sum(extracted) == n_real + 2 * n_syn  # image features again; the masks did not change
    assert third["feature_cache"]["misses"] == 1
    run_without = evaluate_synthetic_set(str(real), syn, tmp_path / "nocache", EvaluateOptions(**{**FAST, "use_cache": False}))
    assert run_without["feature_cache"]["folder"] is None


def test_device_choice_and_torch_fidelity_names(copied_set, toy_prepared, tmp_path):
    doc = evaluate_synthetic_set(str(toy_prepared), copied_set, tmp_path / "eval", EvaluateOptions(**FAST))
    assert doc["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    figures = doc["images"][SPACE]["synthetic_vs_real"]
    names = figures["torch_fidelity"]
    assert names["frechet_inception_distance"] == figures["frechet_distance"]["value"]
    assert names["kernel_inception_distance_mean"] == figures["kid_mean"]["value"]
    assert names["kernel_inception_distance_std"] == figures["kid_mean"]["std"]
    p, r = figures["precision"]["value"], figures["recall"]["value"]
    assert names["precision"] == p and names["f_score"] == pytest.approx(2 * p * r / (p + r))
    assert doc["key_names"]["torch_fidelity"]["kid_mean"] == "kernel_inception_distance_mean"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: torch sees no CUDA GPU"):
            evaluate_synthetic_set(str(toy_prepared), copied_set, tmp_path / "gpu", EvaluateOptions(**{**FAST, "device": "cuda"}))
        assert not (tmp_path / "gpu").exists()
