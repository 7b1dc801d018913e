"""2D cases cut from 3D volumes: slices (grouped by volume) and slice mosaics."""

import json

import nibabel as nib
import numpy as np

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import make_options, prepare_dataset


def _prepare(inputs, out, **kw):
    options = make_options(**{"test_fraction": 0.2, "val_fraction": 0.1, "folds": 2, **kw})
    return load_manifest(prepare_dataset(inputs, out, options, progress=False))


def _write_volumes(root, volumes, masks, spacing=(1.0, 1.0, 1.0)):
    """MSD-like folder of the given arrays (RAS affine, diagonal `spacing`)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    for i, (image, mask) in enumerate(zip(volumes, masks)):
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / f"vol_{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), root / "labelsTr" / f"vol_{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"name": "vols", "modality": {"0": "CT"},
                                                   "labels": {"0": "background", "1": "organ"}}))
    return root


def test_slices_keep_volumes_in_one_split(tmp_path, toy_msd):
    m = _prepare([toy_msd], tmp_path / "out", slices="axial", shape=(16, 16))
    pre = m.preprocessing
    assert (pre["dims"], pre["input"], pre["shape"], pre["channels"], pre["bit_depth"]) == (2, "slices", [16, 16], 1, 16)
    assert pre["intensity"] == {"mode": "window", "lo": -1024.0, "hi": 600.0}  # the 3D window of CT
    assert pre["slicing"]["axis"] == "axial" and pre["slicing"]["ras_axis"] == 2
    assert len(m.cases) == 12 * 16  # every slice of the 16³ volumes (the in-plane crop keeps all z)
    case = m.case("toy_003_slice007")
    assert case["volume_id"] == "toy_003" and case["group"] == "toy_003" and case["slice_index"] == 7
    assert case["affine"] is None and case["spacing"] == [1.5, 1.5] and case["shape"] == [16, 16]
    split_of = {i: s for s in ("train", "val", "test") for i in m.split_ids(s)}
    for vol in {c["volume_id"] for c in m.cases}:
        assert len({split_of[c["id"]] for c in m.cases if c["volume_id"] == vol}) == 1
    images, masks = load_arrays(m, m.split_ids("train"))
    assert images.shape[1:] == (1, 16, 16) and masks.shape[1:] == (16, 16)

    fg = _prepare([toy_msd], tmp_path / "fg", slices="axial", shape=(16, 16), foreground_slices_only=True)
    assert 0 < len(fg.cases) < len(m.cases)
    assert all(sum(c["label_voxels"].values()) > 0 for c in fg.cases)
    few = _prepare([toy_msd], tmp_path / "few", slices="coronal", shape=(16, 16), max_slices=3)
    per_volume = [c["slice_index"] for c in few.cases if c["volume_id"] == "toy_000"]
    assert per_volume == [0, 8, 15]  # evenly spaced over the 16 slices (0, 7.5, 15 rounded)


def test_slice_orientation_and_values(tmp_path):
    """Known answer: voxel (x, y, z) holds 100x + 10y + z; an axial slice shows +y up and +x right."""
    x, y, z = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    image = 100 * x + 10 * y + z
    volumes = [image + 0.0] * 6
    masks = [np.ones_like(image)] * 6
    raw = _write_volumes(tmp_path / "raw", volumes, masks, spacing=(1.0, 2.0, 3.0))
    m = _prepare([raw], tmp_path / "out", slices="axial", shape=(5, 4), window=(0, 1000), folds=0)
    case = m.case("vol_0_slice002")
    assert case["spacing"] == [2.0, 1.0]  # rows follow y (2 mm), columns x (1 mm)
    pixels = (np.load(m.cache_path("vol_0_slice002"))["image"][0] + 1) / 2 * 1000
    expected = np.array([[100 * xi + 10 * yi + 2 for xi in range(4)] for yi in reversed(range(5))])
    np.testing.assert_allclose(pixels, expected, atol=1e-3)
    m = _prepare([raw], tmp_path / "sag", slices="sagittal", shape=(6, 5), window=(0, 1000), folds=0)
    pixels = (np.load(m.cache_path("vol_0_slice001"))["image"][0] + 1) / 2 * 1000  # x = 1
    expected = np.array([[100 + 10 * yi + zi for yi in range(5)] for zi in reversed(range(6))])
    np.testing.assert_allclose(pixels, expected, atol=1e-3)


def test_mosaic_tiles_central_slices_in_order(tmp_path):
    """Known answer: slice z of the volume is constant z; tile (r, c) must hold slice first + 3r + c."""
    n_slices = [8, 4, 8, 8, 8, 8]
    volumes = [np.broadcast_to(np.arange(n, dtype=np.float32), (6, 6, n)).copy() for n in n_slices]
    masks = [np.ones((6, 6, n), np.uint8) for n in n_slices]
    raw = _write_volumes(tmp_path / "raw", volumes, masks)
    m = _prepare([raw], tmp_path / "out", mosaic=(2, 3), shape=(12, 18), window=(0, 100), folds=0)
    pre = m.preprocessing
    assert pre["input"] == "mosaic" and pre["slicing"]["mosaic"] == {"rows": 2, "cols": 3, "tile": [6, 6]}
    assert len(m.cases) == 6 and m.case("vol_0")["slice_indices"] == [1, 2, 3, 4, 5, 6]  # central 6 of 8
    z = np.load(m.cache_path("vol_0"))
    values = (z["image"][0] + 1) / 2 * 100
    for r in range(2):
        for c in range(3):
            np.testing.assert_allclose(values[6 * r : 6 * r + 6, 6 * c : 6 * c + 6], 1 + 3 * r + c, atol=1e-3)
    assert z["mask"].all()
    short = np.load(m.cache_path("vol_1"))  # 4 slices: tiles 0..3 filled, the last 2 blank
    assert m.case("vol_1")["slice_indices"] == [0, 1, 2, 3]
    assert (short["image"][0, 6:, 6:] == -1).all() and not short["mask"][6:, 6:].any()
    assert short["mask"][:, :6].all() and short["mask"][:6].all()
