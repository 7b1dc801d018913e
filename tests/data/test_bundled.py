"""The demo dataset bundled inside the package (no dependence on ../shared)."""

import hashlib
import json

import nibabel as nib
import numpy as np

from synthmed.data.bundled import SAMPLE_DATASET_NAME, sample_dataset_path


def test_bundled_dataset_complete_and_consistent():
    root = sample_dataset_path()
    assert root.name == SAMPLE_DATASET_NAME and root.is_dir()
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["name"] == "Hippocampus"
    assert dataset["modality"] == {"0": "MRI"}
    assert dataset["labels"] == {"0": "background", "1": "anterior", "2": "posterior"}
    assert dataset["numTraining"] == len(dataset["training"]) == 40

    images = sorted(p.name for p in (root / "imagesTr").glob("*.nii.gz"))
    labels = sorted(p.name for p in (root / "labelsTr").glob("*.nii.gz"))
    assert len(images) == 40 and images == labels
    assert sorted(e["image"].split("/")[-1] for e in dataset["training"]) == images
    for entry in dataset["training"]:
        image = nib.load(root / entry["image"])
        label = nib.load(root / entry["label"])
        assert image.shape == label.shape and len(image.shape) == 3
        values = np.unique(np.asarray(label.dataobj))
        assert set(values.tolist()) <= {0, 1, 2} and values.max() > 0


def test_bundled_files_match_recorded_hashes():
    root = sample_dataset_path()
    lines = (root / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line.strip())
    assert len(sums) == 80
    for rel, digest in sums.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel


def test_bundled_licence_and_provenance():
    root = sample_dataset_path()
    licence = (root / "LICENSE.md").read_text()
    assert "CC-BY-SA 4.0" in licence and "creativecommons.org/licenses/by-sa/4.0" in licence
    assert "Medical Segmentation Decathlon" in licence
    source = (root / "SOURCE.md").read_text()
    assert "hippocampus_001" in source and "hippocampus_064" in source
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 4_500_000
