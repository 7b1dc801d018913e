"""Sampling-side helpers with multi-channel manifests."""

import pytest

from synthmed.errors import UserError
from synthmed.sample.encode import load_input_pair

PER_CHANNEL = {"mode": "per_channel", "channels": [{"name": "FLAIR", "mode": "window", "lo": 0.0, "hi": 1.0},
                                                    {"name": "T1w", "mode": "window", "lo": 0.0, "hi": 1.0}]}


def test_encode_refuses_a_single_nifti_for_a_multi_channel_model(tmp_path):
    with pytest.raises(UserError, match=r"img.nii.gz: the model takes 2 image channels; encode a multi-channel case by its case id"):
        load_input_pair(str(tmp_path / "img.nii.gz"), str(tmp_path / "mask.nii.gz"), "unused", PER_CHANNEL, (16, 16, 16))
