"""The visual Turing test on multi-channel images: raters see one chosen channel, in its own window."""

import json

import numpy as np
import pytest

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy_channels import write_toy_channels
from synthmed.errors import UserError
from synthmed.sample.writers import reference_affine, write_synthetic_set
from synthmed.vtt.study import ItemPool, StudyOptions, create_study, network_window, shown_channel


@pytest.fixture
def two_channel_study_inputs(tmp_path):
    raw = write_toy_channels(tmp_path / "raw", ["FLAIR", "T1w"], "nnunet", n_cases=8)
    options = PrepareOptions(shape=(16, 16, 16), test_fraction=0.25, val_fraction=0.0, folds=0)
    manifest = load_manifest(prepare_dataset([raw], tmp_path / "prep", options, progress=False))
    train = manifest.split_ids("train")
    images, masks = load_arrays(manifest, train[:2])  # stand-ins for generated pairs, in network units
    card = {"format": "synthmed-card", "format_version": 1, "model": "toy", "checkpoint": {"path": "none", "sha256": "0" * 64},
            "manifest": {"sha256": manifest.sha256}, "trained_on_case_ids": sorted(train), "seed": 0, "count": 2}
    syn = write_synthetic_set(tmp_path / "syn", images, masks, intensity=manifest.preprocessing["intensity"],
                              labels={str(k): v for k, v in manifest.labels.items()},
                              affine=reference_affine(manifest.preprocessing, [manifest.case(i) for i in train]),
                              modality=manifest.preprocessing["modality"], card=card)
    return manifest, syn


def test_the_chosen_channel_is_shown_in_its_own_window(two_channel_study_inputs, tmp_path):
    manifest, syn = two_channel_study_inputs
    images = np.stack([np.full((2, 4, 4, 4), -0.5, np.float32), np.full((2, 4, 4, 4), 0.5, np.float32)], axis=1)
    [pool], name = shown_channel(manifest, [ItemPool("p", "real", images, np.zeros((2, 4, 4, 4), np.int64), ["a", "b"])], 1)
    assert name == "T1w" and pool.images.shape == (2, 1, 4, 4, 4) and np.all(pool.images == 0.5)
    t1 = manifest.preprocessing["intensity"]["channels"][1]
    assert network_window(manifest, (t1["reference_lo"], t1["reference_hi"]), 1) == pytest.approx((-1.0, 1.0))
    study = create_study(f"{manifest.path}:test", [syn], tmp_path / "study", StudyOptions(n=4, channel=1))
    render = json.loads((study / "study.json").read_text())["render"]
    assert render["channel"] == {"index": 1, "name": "T1w"}
    with pytest.raises(UserError, match=r"--channel 2: the images have channels 0..1 \(FLAIR, T1w\)"):
        create_study(f"{manifest.path}:test", [syn], tmp_path / "study2", StudyOptions(n=4, channel=2))
