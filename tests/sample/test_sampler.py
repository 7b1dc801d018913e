import json

import nibabel as nib
import numpy as np
import pytest

from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.sample.sampler import sample_to_folder
from synthmed.sample.writers import reference_affine
from synthmed.train.config import resolve_config
from synthmed.train.loop import train


@pytest.fixture
def tiny_run(toy_prepared, tmp_path):
    config = resolve_config({
        "model": {"name": "wgan3d", "params": {"latent_dim": 8, "base_channels": 4, "n_critic": 1}},
        "data": {"manifest": str(toy_prepared)},
        "optim": {"G": {}, "D": {}},
        "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 4, "progress": False},
        "out": str(tmp_path / "run"),
    })
    return train(config)


def test_sampled_nifti_has_real_geometry_labels_and_card(tiny_run, toy_prepared, tmp_path):
    manifest = load_manifest(toy_prepared)
    out = sample_to_folder(tiny_run, 3, tmp_path / "syn", seed=5)
    images = sorted((out / "imagesTr").glob("*.nii.gz"))
    labels = sorted((out / "labelsTr").glob("*.nii.gz"))
    assert len(images) == len(labels) == 3
    train_cases = [manifest.case(i) for i in manifest.split_ids("train")]
    expected_affine = reference_affine(manifest.preprocessing, train_cases)
    for image_path, label_path in zip(images, labels):
        image, label = nib.load(image_path), nib.load(label_path)
        assert np.allclose(image.affine, expected_affine) and np.allclose(label.affine, expected_affine)
        assert np.allclose(image.header.get_zooms(), np.abs(np.diag(expected_affine)[:3]))
        assert image.shape == label.shape == tuple(manifest.preprocessing["shape"])
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2}
        values = image.get_fdata()
        lo, hi = manifest.preprocessing["intensity"]["lo"], manifest.preprocessing["intensity"]["hi"]
        assert values.min() >= lo - 1e-3 and values.max() <= hi + 1e-3  # back in HU
    card = json.loads((out / "card.json").read_text())
    assert card["trained_on_case_ids"] == sorted(manifest.split_ids("train"))
    assert not set(card["trained_on_case_ids"]) & set(manifest.split_ids("test"))
    assert card["manifest"]["sha256"] == manifest.sha256 and card["seed"] == 5 and card["count"] == 3
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3


def test_equal_seeds_give_equal_files(tiny_run, tmp_path):
    a = sample_to_folder(tiny_run, 2, tmp_path / "a", seed=1)
    b = sample_to_folder(tiny_run, 2, tmp_path / "b", seed=1)
    for name in ["imagesTr/syn_0001_0000.nii.gz", "labelsTr/syn_0001.nii.gz"]:
        assert np.array_equal(nib.load(a / name).get_fdata(), nib.load(b / name).get_fdata())


def test_sampling_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        sample_to_folder(tmp_path / "nope.pt", 1, tmp_path / "out")
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="no checkpoints"):
        sample_to_folder(tmp_path / "run", 1, tmp_path / "out")
    assert not (tmp_path / "out").exists()
