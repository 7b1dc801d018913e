import json

import numpy as np
import pytest

from conftest import make_synthetic_set
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.metrics.evaluate import EvaluateOptions, evaluate_synthetic_set, format_table
from synthmed.data.manifest import parse_real_spec

FAST = dict(features=("radiomics", "autoencoder", "medicalnet"), ae_steps=5, n_bootstrap=10, kid_subsets=10,
            download_weights=False, extractor_kwargs={})


def test_evaluate_writes_every_figure_with_counts_and_fills_the_card(toy_prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNTHMED_WEIGHTS", str(tmp_path / "empty_cache"))
    manifest = load_manifest(toy_prepared)
    train = manifest.split_ids("train")
    syn = make_synthetic_set(toy_prepared, tmp_path / "syn", train[:3] + manifest.split_ids("test"), noise=0.002)
    doc = evaluate_synthetic_set(str(toy_prepared), syn, tmp_path / "eval", EvaluateOptions(**FAST))
    assert capsys.readouterr().err == ""  # said once, in the table below
    assert doc["feature_spaces"]["medicalnet"]["status"] == "unavailable"  # the others still ran
    table = format_table(doc)
    assert table.count("medicalnet: unavailable") == 1 and "real train vs real test" in table.splitlines()[0]
    fd = doc["images"]["radiomics/volume"]["synthetic_vs_real"]["frechet_distance"]
    assert fd["n_synthetic"] == 5 and fd["n_real"] == len(train) and fd["feature_space"] == "radiomics/volume"
    ref = doc["images"]["radiomics/volume"]["real_train_vs_real_test"]["frechet_distance"]
    assert ref["n_real_test"] == 2 and ref["n_real_train"] == len(train)
    assert "autoencoder/volume" in doc["masks"]
    memo = doc["memorisation"]  # 3 noisy copies of training cases, 2 held-out cases
    assert memo["flagged"] == ["syn_0000", "syn_0001", "syn_0002"] and memo["fraction_flagged"] == pytest.approx(0.6)
    files = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"metrics.json", "montage.png", "intensity_histograms.png", "memorisation_closest_pairs.png",
            "tsne_images_radiomics.png"} <= files
    text = (tmp_path / "eval" / "metrics.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}")) == json.loads(json.dumps(doc))
    assert doc["intervals"]["method"].startswith("half-sampling without replacement")
    for key in ("frechet_distance", "kid_mean"):  # every interval holds its own estimate
        for space, entry in doc["images"].items():
            for figures in entry.values():
                if key in figures and figures[key]["ci95"] is not None:
                    low, high = figures[key]["ci95"]
                    assert low <= figures[key]["value"] <= high, (space, key)
    # 2 real test cases: the reference figures say why they are not to be trusted
    assert "fewer than 10" in ref["notes"]["few_samples"] and "prdc" in doc["images"]["radiomics/volume"]["real_train_vs_real_test"]
    card = json.loads((syn / "card.json").read_text())
    assert card["privacy_check"]["fraction_flagged"] == pytest.approx(0.6)
    assert card["metrics"]["evaluation"]["images/radiomics/volume/frechet_distance"]["n_synthetic"] == 5
    assert "memorisation: 60.0% of 5" in format_table(doc)


def test_a_shifted_set_is_further_than_a_near_copy(toy_prepared, tmp_path):
    ids = load_manifest(toy_prepared).split_ids("train")
    options = EvaluateOptions(**{**FAST, "features": ("radiomics",), "update_card": False})
    values = []
    for shift in (0.0, 0.1, 0.3):
        syn = make_synthetic_set(toy_prepared, tmp_path / f"syn{shift}", ids, shift=shift)
        doc = evaluate_synthetic_set(str(toy_prepared), syn, tmp_path / f"eval{shift}", options)
        values.append(doc["images"]["radiomics/volume"]["synthetic_vs_real"]["frechet_distance"]["value"])
        assert doc["intensity"]["wasserstein"]["all"]["value"] == pytest.approx(shift * 812, rel=0.1, abs=1.0)  # HU
    assert values[0] == pytest.approx(0, abs=1e-6) and values[0] < values[1] < values[2]


def test_bad_inputs_are_clear_errors_and_leave_nothing(toy_prepared, copied_set, tmp_path):
    with pytest.raises(UserError, match="unknown split 'tets'"):
        parse_real_spec(f"{toy_prepared}:tets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a synthetic set"):
        evaluate_synthetic_set(str(toy_prepared), tmp_path / "empty", tmp_path / "out")
    label = copied_set / "labelsTr" / "syn_0000.nii.gz"
    import nibabel as nib
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), label)
    with pytest.raises(UserError, match=r"syn_0000: image \[16, 16, 16\] and mask \[8, 8, 8\]"):
        evaluate_synthetic_set(str(toy_prepared), copied_set, tmp_path / "out")
    for image in (copied_set / "imagesTr").iterdir():
        image.unlink()
    with pytest.raises(UserError, match="image missing for label syn_0000"):
        evaluate_synthetic_set(str(toy_prepared), copied_set, tmp_path / "out")
    with pytest.raises(UserError, match="Did you mean"):
        evaluate_synthetic_set(str(toy_prepared), copied_set, tmp_path / "out", EvaluateOptions(features=("radiomic",)))
    assert not (tmp_path / "out").exists()


def test_cli_defaults_are_the_options_defaults(monkeypatch, tmp_path, capsys):
    import argparse

    from synthmed.metrics import cli

    seen = []
    monkeypatch.setattr(cli, "evaluate_synthetic_set", lambda real, synthetic, out, options: seen.append(options) or {})
    monkeypatch.setattr(cli, "format_table", lambda doc: "")
    parser = argparse.ArgumentParser()
    cli.add_evaluate_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--real", "m", "--synthetic", "s", "--out", str(tmp_path)])
    args.func(args)
    assert seen == [EvaluateOptions()]


def _set_2d(manifest_path, out, with_card: bool):
    from synthmed.data.dataset import load_arrays
    from synthmed.sample.writers import write_synthetic_set

    manifest = load_manifest(manifest_path)
    images, masks = load_arrays(manifest, manifest.split_ids("train")[:12])
    card = {"format": "synthmed-card", "format_version": 1, "trained_on_case_ids": manifest.split_ids("train")}
    folder = write_synthetic_set(out, images, masks, intensity=manifest.preprocessing["intensity"],
                                 labels={str(k): v for k, v in manifest.labels.items()}, affine=None,
                                 modality="image", card=card)
    if not with_card:
        (folder / "card.json").unlink()
    return folder


def test_2d_set_without_card_skips_3d_only_spaces_and_privacy_and_says_so(toy_prepared_2d, tmp_path):
    syn = _set_2d(toy_prepared_2d, tmp_path / "syn", with_card=False)
    options = EvaluateOptions(**{**FAST, "features": ("radiomics", "medicalnet")})
    doc = evaluate_synthetic_set(str(toy_prepared_2d), syn, tmp_path / "eval", options)
    assert doc["feature_spaces"]["medicalnet"] == {"status": "skipped", "reason": "3D only (no 2D twin); these images are 2D"}
    assert doc["feature_spaces"]["radiomics"]["name"] == "radiomics_2d"
    assert "no card.json" in doc["memorisation"]["skipped"] and doc["card"]["status"] == "missing"
    table = format_table(doc)
    assert "memorisation: skipped (no card.json" in table and table.count("medicalnet: skipped") == 1
    assert not (syn / "card.json").exists() and not (tmp_path / "eval" / "memorisation_closest_pairs.png").exists()
    with pytest.raises(UserError, match="none of the feature spaces.*medicalnet: 3D only"):
        evaluate_synthetic_set(str(toy_prepared_2d), syn, tmp_path / "eval2", EvaluateOptions(features=("medicalnet",)))


def test_a_missing_mask_or_an_unfinished_folder_is_refused(copied_set, toy_prepared, tmp_path):
    (copied_set / "labelsTr" / "syn_0001.nii.gz").unlink()
    with pytest.raises(UserError, match=r"labelsTr/syn_0001.nii.gz: mask missing for image syn_0001_0000.nii.gz"):
        evaluate_synthetic_set(str(toy_prepared), copied_set, tmp_path / "out")
    partial = make_synthetic_set(toy_prepared, tmp_path / ".syn.x1.partial", load_manifest(toy_prepared).split_ids("test"))
    with pytest.raises(UserError, match=r"\.partial.*unfinished output folder"):
        evaluate_synthetic_set(str(toy_prepared), partial, tmp_path / "out")
    assert not (tmp_path / "out").exists()
