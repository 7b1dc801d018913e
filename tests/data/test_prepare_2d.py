"""2D prepare: PNG/JPEG/TIFF folders, mask rules, bit depths, channels, shapes, errors."""

import json

import numpy as np
import pytest
import torch

from synthmed.data.dataset import PreparedDataset, load_arrays
from synthmed.data.manifest import load_manifest


def test_toy_prepared_2d_fixture_follows_the_2d_conventions(toy_prepared_2d):
    from synthmed.train.loop import data_record

    m = load_manifest(toy_prepared_2d)
    pre = m.preprocessing
    assert (pre["dims"], pre["shape"], pre["channels"], pre["bit_depth"]) == (2, [32, 32], 1, 8)
    assert pre["intensity"]["mode"] == "window" and (pre["intensity"]["lo"], pre["intensity"]["hi"]) == (0, 255)
    assert m.labels == {0: "background", 1: "label_1"}
    ids = m.split_ids("train")
    assert (len(ids), len(m.split_ids("val")), len(m.split_ids("test"))) == (17, 2, 5)
    images, masks = load_arrays(m, ids)
    assert images.shape == (17, 1, 32, 32) and images.dtype == np.float32
    assert masks.shape == (17, 32, 32) and masks.dtype == np.int64
    assert -1 <= images.min() and images.max() <= 1 and set(np.unique(masks)) == {0, 1}
    # the disc (label 1) is bright, the background dark: 0.8 and 0.2 of full scale -> 0.6 and -0.6
    assert images[:, 0][masks == 1].mean() == pytest.approx(0.6, abs=0.05)
    assert images[:, 0][masks == 0].mean() == pytest.approx(-0.6, abs=0.05)
    item = PreparedDataset(m, ids)[0]
    assert item["image"].shape == (1, 32, 32) and item["mask"].dtype == torch.int64
    record = data_record(m, ids)
    assert record["train_cases"][0]["affine"] is None and record["train_cases"][0]["spacing"] == [1.0, 1.0]
    assert load_arrays(m, [])[0].shape == (0, 1, 32, 32)
    json.dumps(record)  # checkpoints store it as JSON-like data
