"""End to end with two image channels: a 2-channel 3D toy set (nnU-Net _0000/_0001 files) through
prepare -> train (dcgan3d, a few steps) -> sample -> evaluate -> downstream, all through the CLI; the
sampled NIfTI files open with both channels at the prepared geometry."""

import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from synthmed.cli import main
from synthmed.data.toy_channels import write_toy_channels
from synthmed.sample.synthetic_set import load_synthetic_set
from tests.tiny_downstream import run_tiny_downstream
from tests.train.test_training import tiny_config


@pytest.mark.slow
def test_two_channels_through_every_stage(tmp_path, capsys):
    raw = write_toy_channels(tmp_path / "raw", ["FLAIR", "T1w"], "nnunet", n_cases=10)
    prep, run, syn = tmp_path / "prep", tmp_path / "run", tmp_path / "syn"
    assert main(["prepare", str(raw), "--out", str(prep), "--shape", "16", "16", "16", "--test-fraction", "0.2",
                 "--val-fraction", "0.1", "--folds", "2"]) == 0
    manifest = json.loads((prep / "manifest.json").read_text())
    assert manifest["preprocessing"]["modality"] == ["FLAIR", "T1w"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tiny_config(prep / "manifest.json", run, steps=4)))
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 0
    assert main(["sample", "--checkpoint", str(run), "-n", "4", "--out", str(syn)]) == 0

    assert json.loads((syn / "dataset.json").read_text())["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    case = next(c for c in manifest["cases"] if c["id"] in manifest["splits"]["train"])
    for c in range(2):
        written = nib.load(syn / "imagesTr" / f"syn_0000_{c:04d}.nii.gz")
        assert written.shape == (16, 16, 16) and np.allclose(written.affine, case["affine"])
    images, masks, names = load_synthetic_set(syn, (16, 16, 16))
    assert images.shape == (4, 2, 16, 16, 16) and masks.shape == (4, 16, 16, 16) and len(names) == 4
    channels = manifest["preprocessing"]["intensity"]["channels"]
    for c in range(2):  # each channel back in its own units: within that channel's reference range
        assert channels[c]["reference_lo"] - 1e-3 <= images[:, c].min() <= images[:, c].max() <= channels[c]["reference_hi"] + 1e-3

    assert main(["evaluate", "--real", f"{prep}:test", "--synthetic", str(syn), "--out", str(tmp_path / "eval"),
                 "--features", "autoencoder", "--channels", "per_channel", "--ae-steps", "5", "--bootstrap", "10", "--kid-subsets", "5",
                 "--offline", "--no-card"]) == 0
    assert "image channels: autoencoder[FLAIR] channel 0 (FLAIR); autoencoder[T1w] channel 1 (T1w)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["feature_spaces"]["autoencoder[T1w]"]["channels"]["images"] == "channel 1 (T1w)"
    assert metrics["feature_spaces"]["autoencoder"]["channels"]["masks"] == "single channel"
    assert {"autoencoder[FLAIR]/volume", "autoencoder[T1w]/volume"} <= set(metrics["images"])
    assert set(metrics["intensity"]["per_channel"]) == {"FLAIR", "T1w"}

    assert run_tiny_downstream(prep, syn, 4, tmp_path) == {"real-rall-noaug", "synthetic-toy-n4-noaug"}
