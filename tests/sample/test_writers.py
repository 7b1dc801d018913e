import json

import nibabel as nib
import numpy as np
import pytest

from synthmed.errors import UserError
from synthmed.sample.writers import reference_affine, write_synthetic_set

LABELS = {"0": "background", "1": "anterior", "2": "posterior"}
INTENSITY = {"mode": "window", "lo": -1000.0, "hi": 1000.0}
SPACING = [1.5, 1.0, 2.0]


def _affine():
    a = np.diag(SPACING + [1.0])
    a[:3, 3] = [-10.0, 4.0, 30.0]
    return a


def _pairs(n=2, shape=(6, 7, 5), channels=1):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(n, channels, *shape)).astype(np.float32)
    masks = np.zeros((n, *shape), dtype=np.int64)
    masks[:, 1:4, 1:4, 1:3] = 1
    masks[:, 4:6, 2:5, 2:4] = 2
    return images, masks


def _write(out, images, masks, **kw):
    args = dict(intensity=INTENSITY, labels=LABELS, affine=_affine(), modality="MRI", card={"format": "synthmed-card"})
    args.update(kw)
    return write_synthetic_set(out, images, masks, **args)


def test_reference_affine_uses_spacing_and_median_origin():
    cases = [{"id": f"c{i}", "affine": np.diag([2.0, 2.0, 2.0, 1.0]).tolist(), "spacing": [2.0, 2.0, 2.0]} for i in range(3)]
    for case, origin in zip(cases, [[0, 0, 0], [10, 20, 30], [4, -2, 6]]):
        case["affine"][0][3], case["affine"][1][3], case["affine"][2][3] = origin
    a = reference_affine({"orientation": "RAS", "spacing": [1.0, 1.5, 2.5]}, cases)
    np.testing.assert_allclose(np.diag(a)[:3], [1.0, 1.5, 2.5])
    np.testing.assert_allclose(a[:3, 3], [4, 0, 6])
    # spacing null: median case spacing
    b = reference_affine({"orientation": "RAS", "spacing": None}, cases)
    np.testing.assert_allclose(np.diag(b)[:3], [2.0, 2.0, 2.0])
    with pytest.raises(UserError, match="no training cases"):
        reference_affine({"orientation": "RAS", "spacing": None}, [])


def test_written_files_reopen_with_geometry_units_and_labels(tmp_path):
    images, masks = _pairs(n=2, channels=2)
    out = _write(tmp_path / "syn", images, masks, modality=["T1", "T2"], card={"format": "synthmed-card", "seed": 3})
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "syn_0000_0000.nii.gz", "syn_0000_0001.nii.gz", "syn_0001_0000.nii.gz", "syn_0001_0001.nii.gz"
    ]
    for i in range(2):
        for c in range(2):
            img = nib.load(out / "imagesTr" / f"syn_{i:04d}_{c:04d}.nii.gz")
            np.testing.assert_allclose(img.affine, _affine())
            np.testing.assert_allclose(img.header.get_zooms(), SPACING)
            assert img.header["sform_code"] == 1 and img.header["qform_code"] == 1
            data = img.get_fdata(dtype=np.float32)
            assert img.get_data_dtype() == np.float32
            np.testing.assert_allclose(data, (images[i, c] + 1) * 1000 - 1000, rtol=1e-5, atol=1e-3)
        lab = nib.load(out / "labelsTr" / f"syn_{i:04d}.nii.gz")
        assert lab.get_data_dtype() == np.uint8
        np.testing.assert_allclose(lab.affine, _affine())
        np.testing.assert_allclose(lab.header.get_zooms(), SPACING)
        values = np.asarray(lab.dataobj)
        assert set(np.unique(values).tolist()) <= {0, 1, 2}
        np.testing.assert_array_equal(values, masks[i])
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "T1", "1": "T2"}
    assert dataset["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    assert json.loads((out / "card.json").read_text())["seed"] == 3


def test_mask_clean_up_applied(tmp_path):
    images, masks = _pairs(n=1)
    masks[0, 0, 6, 4] = 1  # stray voxel
    out = _write(tmp_path / "syn", images, masks, min_component_size=3)
    values = np.asarray(nib.load(out / "labelsTr" / "syn_0000.nii.gz").dataobj)
    assert values[0, 6, 4] == 0 and (values == 1).sum() == 18


def _assert_nothing_left(tmp_path):
    assert list(tmp_path.iterdir()) == []


def test_nan_image_refused_and_nothing_left(tmp_path):
    images, masks = _pairs()
    images[1, 0, 2, 2, 2] = np.nan
    with pytest.raises(UserError, match=r"NaN.*\[1\]"):
        _write(tmp_path / "syn", images, masks)
    _assert_nothing_left(tmp_path)


@pytest.mark.parametrize("masks_shape", [(2, 6, 7, 4), (3, 6, 7, 5)])
def test_shape_mismatch_refused_and_nothing_left(tmp_path, masks_shape):
    images, _ = _pairs()
    with pytest.raises(UserError, match="shape mismatch"):
        _write(tmp_path / "syn", images, np.zeros(masks_shape, dtype=np.int64))
    _assert_nothing_left(tmp_path)


def test_unknown_label_refused(tmp_path):
    images, masks = _pairs()
    masks[0, 0, 0, 0] = 7
    with pytest.raises(UserError, match=r"\[7\].*declared labels"):
        _write(tmp_path / "syn", images, masks)
    _assert_nothing_left(tmp_path)


def test_failure_during_write_leaves_no_partial(tmp_path):
    images, masks = _pairs()

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        _write(tmp_path / "syn", images, masks, card={"bad": Unserialisable()})
    _assert_nothing_left(tmp_path)


def test_existing_folder_needs_overwrite(tmp_path):
    images, masks = _pairs()
    out = tmp_path / "syn"
    _write(out, images, masks)
    (out / "dataset.json").write_text("stale")
    with pytest.raises(UserError, match="already exists"):
        _write(out, images, masks)
    assert (out / "dataset.json").read_text() == "stale"
    _write(out, images, masks, overwrite=True)  # a set written by sample is replaced
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == len(images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_overwrite_keeps_a_folder_sample_did_not_write(tmp_path):
    images, masks = _pairs()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "old.txt").write_text("x")
    with pytest.raises(UserError, match="not written by synthmed"):
        _write(foreign, images, masks, overwrite=True)
    assert (foreign / "old.txt").read_text() == "x"
