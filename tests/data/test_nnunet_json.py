"""synthmed.data.nnunet_json: dataset.json by nnU-Net v2's rules, label remapping, and the same verdicts as
nnU-Net's own label checks."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.data.nnunet_json import (
    build_dataset_json,
    dataset_json_problems,
    label_mapping,
    remap_mask,
    restore_mask,
    validate_dataset_json,
)
from synthmed.errors import UserError


def test_non_consecutive_labels_get_a_background_key_and_consecutive_values():
    dataset, mapping = build_dataset_json({"0": "bg", "2": "tumour", "5": "edema"}, "CT", 2, 10, ".nii.gz", name="x")
    assert dataset["labels"] == {"background": 0, "tumour": 1, "edema": 2}
    assert mapping == {0: 0, 2: 1, 5: 2}
    assert dataset["synthmed_label_mapping"] == {"0": 0, "2": 1, "5": 2}
    assert dataset["channel_names"] == {"0": "CT", "1": "CT"}  # not CT_0 / CT_1: keeps nnU-Net's CT normalisation
    assert dataset["numTraining"] == 10 and dataset["file_ending"] == ".nii.gz" and dataset["name"] == "x"


def test_consecutive_labels_are_kept_and_no_mapping_is_recorded():
    dataset, mapping = build_dataset_json({0: "background", 1: "a", 2: "b"}, ["T1", "T2"], 2, 3, ".nii.gz")
    assert mapping == {0: 0, 1: 1, 2: 2} and "synthmed_label_mapping" not in dataset
    assert dataset["channel_names"] == {"0": "T1", "1": "T2"}


def test_an_ignore_label_goes_last():
    dataset, mapping = build_dataset_json({"0": "bg", "1": "Ignore", "3": "organ"}, "MRI", 1, 1, ".nii.gz")
    assert dataset["labels"] == {"background": 0, "organ": 1, "ignore": 2}
    assert mapping == {0: 0, 3: 1, 1: 2}


def test_masks_are_remapped_and_restored():
    mask = np.array([[0, 2], [5, 2]])
    mapping = label_mapping({"0": "bg", "2": "a", "5": "b"})
    written = remap_mask(mask, mapping)
    assert written.dtype == np.uint8 and written.tolist() == [[0, 1], [2, 1]]
    dataset, _ = build_dataset_json({"0": "bg", "2": "a", "5": "b"}, "CT", 1, 1, ".nii.gz")
    assert restore_mask(written, dataset).tolist() == mask.tolist()
    assert restore_mask(written, {}).tolist() == written.tolist()  # no mapping recorded: values as written
    with pytest.raises(UserError, match=r"\[3\]"):
        remap_mask(np.array([0, 3]), mapping)


@pytest.mark.parametrize("labels,match", [
    ({"1": "a"}, "must declare 0"),
    ({"0": "bg", "1": "a", "2": "A"}, "unique"),
    ({"0": "bg", "3": "background"}, "reserves for 0"),
    ({"zero": "bg"}, "integer label values"),
])
def test_bad_label_sets_are_refused(labels, match):
    with pytest.raises(UserError, match=match):
        build_dataset_json(labels, "CT", 1, 1, ".nii.gz")


def test_mask_only_sets_have_no_channels():
    dataset, _ = build_dataset_json({"0": "bg", "1": "a"}, "MRI", 0, 4, ".png")
    assert dataset["channel_names"] == {}
    assert any("channel_names" in p for p in dataset_json_problems(dataset))  # nnU-Net cannot train on it


GOOD = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "numTraining": 2, "file_ending": ".nii.gz"}
LABEL_CASES = [
    {"background": 0, "a": 1, "b": 2},
    {"background": 0, "a": 2},
    {"bg": 0, "a": 1},
    {"background": 1, "a": 0},
    {"background": 0, "a": 1, "ignore": 2},
    {"background": 0, "a": 1, "ignore": 3},
    {"background": 0, "ignore": 1, "a": 2},
    {"background": 0, "a": 1, "b": 1},
]


@pytest.mark.parametrize("labels", LABEL_CASES)
def test_label_verdicts_match_nnunets_own_checks(labels):
    """nnU-Net's LabelManager plus verify_dataset_integrity's consecutive-values assertion, on the same labels."""
    label_handling = pytest.importorskip("nnunetv2.utilities.label_handling.label_handling",
                                         reason="nnunetv2 is not installed (see pyproject's test extra)")
    try:
        manager = label_handling.LabelManager(labels, regions_class_order=None)
        expected = manager.all_labels + ([manager.ignore_label] if manager.has_ignore_label else [])
        nnunet_accepts = bool(np.all(np.ediff1d(expected) == 1))
    except (AssertionError, RuntimeError):
        nnunet_accepts = False
    problems = dataset_json_problems({**GOOD, "labels": labels})
    assert (not problems) == nnunet_accepts, problems


@pytest.mark.parametrize("change,match", [
    ({"numTraining": 0}, "numTraining"),
    ({"file_ending": "nii.gz"}, "file_ending"),
    ({"channel_names": {"1": "CT"}}, "channel_names"),
])
def test_validation_names_the_file_and_the_broken_rule(change, match):
    assert dataset_json_problems(GOOD) == []
    with pytest.raises(UserError, match=f"out/dataset.json: not a valid nnU-Net v2 dataset.json(.|\n)*{match}"):
        validate_dataset_json({**GOOD, **change}, "out/dataset.json")
    broken = dict(GOOD)
    del broken["labels"]
    assert dataset_json_problems(broken) == ["missing required key(s) labels"]
