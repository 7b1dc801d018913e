"""The demo dataset shipped inside the package: 40 MSD Task04 Hippocampus cases.

The files are unmodified copies of Medical Segmentation Decathlon data (CC-BY-SA 4.0). The licence,
citations and the exact case list are in ``sample_data/hippocampus/LICENSE.md`` and ``SOURCE.md``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_DATASET_NAME = "hippocampus"


def sample_dataset_path() -> Path:
    """Folder of the bundled demo dataset, in MSD layout.

    The folder holds ``imagesTr/*.nii.gz``, ``labelsTr/*.nii.gz`` (same file names), an MSD-style
    ``dataset.json`` (modality ``{"0": "MRI"}``, labels 0 background, 1 anterior, 2 posterior),
    ``LICENSE.md`` (CC-BY-SA 4.0) and ``SOURCE.md`` (provenance and case ids). It works from a source
    checkout and from a pip-installed wheel (the data is package data). Treat it as read-only.

    Returns:
        Path to ``synthmed/data/sample_data/hippocampus``.

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    path = Path(str(resources.files("synthmed.data").joinpath("sample_data", SAMPLE_DATASET_NAME)))
    if not (path / "dataset.json").is_file():
        raise FileNotFoundError(
            f"{path}: bundled sample dataset is missing (dataset.json not found); "
            "reinstall synthmed with its package data"
        )
    return path
