"""A 3D set with label values {0, 1, 4} goes through prepare -> train -> sample -> evaluate -> downstream."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from synthmed.cli import main
from synthmed.data.nnunet_json import restore_mask
from tests.data.test_label_values import write_gapped_toy
from tests.train.test_training import tiny_config


@pytest.mark.slow
def test_gapped_labels_work_end_to_end_and_the_sample_maps_back_to_the_source_values(tmp_path):
    raw = write_gapped_toy(tmp_path / "raw", layout="msd")
    meta = json.loads((raw / "dataset.json").read_text())
    (raw / "dataset.json").write_text(json.dumps({**meta, "labels": {"0": "background", "1": "sphere", "4": "core"}}))
    prepared = tmp_path / "prepared"
    assert main(["prepare", str(raw), "--out", str(prepared), "--shape", "16", "16", "16", "--folds", "2"]) == 0

    config = tmp_path / "dcgan.yaml"  # one-hot masks: label 4 used to crash F.one_hot with 3 classes
    config.write_text(yaml.safe_dump(tiny_config(prepared, tmp_path / "run", steps=2)))
    assert main(["train", "--config", str(config)]) == 0
    synthetic = tmp_path / "syn"
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "-n", "4", "--out", str(synthetic)]) == 0

    dataset = json.loads((synthetic / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "sphere": 1, "core": 2}
    assert dataset["synthmed_label_mapping"] == {"0": 0, "1": 1, "4": 2}
    written = np.stack([np.asarray(nib.load(p).dataobj) for p in sorted((synthetic / "labelsTr").glob("*.nii.gz"))])
    assert set(np.unique(written).tolist()) <= {0, 1, 2}
    assert set(np.unique(restore_mask(written, dataset)).tolist()) <= {0, 1, 4}
    np.testing.assert_array_equal(restore_mask(written, dataset) == 4, written == 2)

    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--real", f"{prepared}:train", "--synthetic", str(synthetic), "--out", str(evaluation),
                 "--features", "radiomics", "--offline", "--bootstrap", "10", "--no-card"]) == 0
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["labels"]["2"] == {"name": "core", "source_value": 4}
    volumes = metrics["mask_statistics"]["statistics"]
    assert volumes["label_2/volume"]["real_median"] > 0 and "label_4/volume" not in volumes  # no empty class

    downstream = tmp_path / "downstream.yaml"
    downstream.write_text(yaml.safe_dump({
        "manifest": str(prepared), "synthetic": {"syn": str(synthetic)}, "arms": ["real", "real+synthetic"],
        "n_synthetic": [4], "real_sizes": ["all"], "with_augmentation": [False], "folds": 2, "seeds": [0],
        "train": {"steps": 1, "batch_size": 2, "model_size": "tiny", "device": "cpu"}, "stats": {"bootstrap": 100},
        "out": str(tmp_path / "bench"),
    }))
    assert main(["downstream", "--config", str(downstream)]) == 0
    with open(tmp_path / "bench" / "per_case.csv", newline="") as f:
        scored = {(row["label"], row["label_name"]) for row in csv.DictReader(f)}
    assert scored == {("1", "sphere"), ("2", "core")}  # Dice per class index: no empty classes 2..3 of max(value)+1
