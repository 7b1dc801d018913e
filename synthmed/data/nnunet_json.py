"""nnU-Net v2 ``dataset.json``: build one that nnU-Net accepts, and check one with nnU-Net's rules.

nnU-Net v2 (``nnunetv2.experiment_planning.verify_dataset_integrity`` and its ``LabelManager``) needs
``channel_names``, ``labels``, ``numTraining`` and ``file_ending``; ``labels`` maps names to values,
with a ``background`` key equal to 0 and the values consecutive (0, 1, 2, ...); a label named
``ignore`` must be the largest. A channel's *name* picks its normalisation: ``"CT"`` (any case) gets
nnU-Net's CT normalisation (clip to the foreground's 0.5..99.5 percentiles, then z-score with the
dataset's statistics), every other name a per-case z-score. So two CT channels are both named
``"CT"``, never ``"CT_0"`` / ``"CT_1"``.

A label set whose values are not consecutive (``{0, 2, 5}``) is remapped in value order
(``{0: 0, 2: 1, 5: 2}``); the masks must then be written with the new values (`remap_mask`). `prepare`
already writes its masks as such consecutive class indices and records their source values in the
manifest (``label_values``); given those, the written values are the class indices. Either way the file
records, under `LABEL_MAPPING_KEY`, each source value -> written value where they differ, so that the
masks can be read back in the source values (`restore_mask`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.errors import UserError, format_problems

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
BACKGROUND = "background"
IGNORE = "ignore"  # nnU-Net's name for "not annotated" voxels: excluded from the loss, must be the largest value
LABEL_MAPPING_KEY = "synthmed_label_mapping"  # {str(source value): written value}; only when they differ


def label_mapping(labels: Mapping[int | str, str]) -> dict[int, int]:
    """Original label value -> consecutive nnU-Net value (0 stays 0; an ``ignore`` label goes last).

    Args:
        labels: value -> name, e.g. a manifest's ``labels`` (``{"0": "bg", "2": "tumour"}``).

    Raises:
        UserError: a key is not an integer, 0 is missing, a name repeats, or a label other than 0 is
            named ``background``.
    """
    try:
        by_value = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise UserError(f"labels: keys must be integer label values, got {list(labels)}") from None
    problems = []
    if 0 not in by_value:
        problems.append("labels: the label set must declare 0 (background)")
    names = [n.casefold() for n in by_value.values()]
    if len(set(names)) != len(names):
        problems.append(f"labels: names must be unique (ignoring case), got {sorted(by_value.values())}")
    wrong_background = [v for v, n in by_value.items() if v != 0 and n.casefold() == BACKGROUND]
    if wrong_background:
        problems.append(f"labels: value {wrong_background[0]} is named 'background', which nnU-Net reserves for 0")
    if problems:
        raise UserError(format_problems("labels cannot be written for nnU-Net", problems))
    ignore = [v for v, n in by_value.items() if v != 0 and n.casefold() == IGNORE]
    order = [v for v in sorted(by_value) if v not in ignore] + ignore
    return {value: index for index, value in enumerate(order)}


def nnunet_channel_names(modality: str | Sequence[str], n_channels: int) -> dict[str, str]:
    """``channel_names`` for `n_channels` channels: one name repeated (``"CT"`` stays ``"CT"``), or one per channel.

    Raises:
        UserError: a list of names whose length is not `n_channels`.
    """
    if isinstance(modality, str):
        names = [modality] * n_channels
    else:
        names = [str(m) for m in modality]
        if len(names) != n_channels:
            raise UserError(f"modality: {len(names)} names given for images with {n_channels} channels")
    return {str(c): name for c, name in enumerate(names)}


def build_dataset_json(labels: Mapping[int | str, str], modality: str | Sequence[str], n_channels: int,
                       num_training: int, file_ending: str, label_values: Mapping[int | str, int] | None = None,
                       **extra: Any) -> tuple[dict[str, Any], dict[int, int]]:
    """An nnU-Net v2 ``dataset.json`` and the label mapping its masks must be written with.

    Args:
        labels: value -> name (a manifest's ``labels``); value 0 is written as ``background``.
        modality: the channel name(s) (see `nnunet_channel_names`).
        n_channels: image channels per case (0: a mask-only set, which nnU-Net cannot train on; its
            ``channel_names`` stay empty and only the other rules are checked).
        num_training: the number of cases in ``labelsTr``.
        file_ending: e.g. ``".nii.gz"`` or ``".png"``.
        label_values: the source value of each label of `labels` (a manifest's ``label_values``); None:
            the labels' own values. Recorded with the written values under `LABEL_MAPPING_KEY`.
        extra: further keys (name, description, ...); nnU-Net ignores what it does not know.

    Returns:
        ``(dataset, mapping)``: ``mapping`` is original value -> written value (see `remap_mask`).

    Raises:
        UserError: see `label_mapping` and `nnunet_channel_names`; or the result breaks nnU-Net's
            rules (`validate_dataset_json`).
    """
    mapping = label_mapping(labels)
    names = {int(k): str(v) for k, v in labels.items()}
    written = {_written_name(value, names[value]): new for value, new in mapping.items()}
    dataset: dict[str, Any] = {
        "channel_names": nnunet_channel_names(modality, n_channels),
        "labels": dict(sorted(written.items(), key=lambda item: item[1])),
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    sources = {int(k): int(v) for k, v in (label_values or {}).items()}
    recorded = {sources.get(value, value): new for value, new in mapping.items()}
    if any(old != new for old, new in recorded.items()):
        dataset[LABEL_MAPPING_KEY] = {str(old): new for old, new in recorded.items()}
    problems = dataset_json_problems(dataset)
    if n_channels == 0:
        problems = [p for p in problems if not p.startswith("channel_names")]
    if problems:
        raise UserError(format_problems("cannot build an nnU-Net v2 dataset.json", problems))
    return dataset, mapping


def _written_name(value: int, name: str) -> str:
    """nnU-Net's reserved names are exact keys: 0 is 'background', an ignore label 'ignore'."""
    if value == 0:
        return BACKGROUND
    return IGNORE if name.casefold() == IGNORE else name


def remap_mask(mask: np.ndarray, mapping: Mapping[int, int], where: str | Path = "mask") -> np.ndarray:
    """`mask` with every value replaced through `mapping` (uint8).

    Raises:
        UserError: naming `where` (the mask's file), when a value is not in `mapping`.
    """
    values = np.unique(mask)
    unknown = sorted(set(values.tolist()) - set(mapping))
    if unknown:
        raise UserError(f"{where}: mask values {unknown} are not among the declared labels {sorted(mapping)}")
    table = np.zeros(int(max(values.max(), max(mapping))) + 1, dtype=np.uint8)
    for old, new in mapping.items():
        table[old] = new
    return table[np.asarray(mask, dtype=np.int64)]


def restore_mask(mask: np.ndarray, dataset: Mapping[str, Any]) -> np.ndarray:
    """A mask read from a folder whose ``dataset.json`` is `dataset`, in the source values (int64)."""
    recorded = dataset.get(LABEL_MAPPING_KEY)
    mask = np.asarray(mask, dtype=np.int64)
    if not recorded:
        return mask
    inverse = {int(new): int(old) for old, new in recorded.items()}
    table = np.arange(max(int(mask.max(initial=0)), max(inverse)) + 1, dtype=np.int64)
    for new, old in inverse.items():
        table[new] = old
    return table[mask]


def dataset_json_problems(dataset: Mapping[str, Any]) -> list[str]:
    """What nnU-Net v2 would reject in `dataset` (its integrity check and LabelManager rules); [] when fine."""
    missing = [k for k in REQUIRED_KEYS if k not in dataset]
    if missing:
        return [f"missing required key(s) {', '.join(missing)}"]
    problems = _label_problems(dataset["labels"], dataset.get("regions_class_order"))
    channels = dataset["channel_names"]
    if not isinstance(channels, dict) or not channels:
        problems.append("channel_names: must be a non-empty mapping {'0': name, ...}")
    elif sorted(channels) != [str(i) for i in range(len(channels))]:
        problems.append(f"channel_names: keys must be '0'..'{len(channels) - 1}', got {sorted(channels)}")
    if not isinstance(dataset["numTraining"], int) or dataset["numTraining"] < 1:
        problems.append(f"numTraining: must be a positive integer, got {dataset['numTraining']!r}")
    ending = dataset["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        problems.append(f"file_ending: must be a file ending like '.nii.gz', got {ending!r}")
    return problems


def _label_problems(labels: Any, regions_class_order: Any) -> list[str]:
    if not isinstance(labels, dict):
        return ["labels: must be a mapping name -> value"]
    if BACKGROUND not in labels:
        return ["labels: no 'background' key (nnU-Net needs 'background': 0)"]
    if isinstance(labels[BACKGROUND], (list, tuple)) or labels[BACKGROUND] != 0:
        return [f"labels: 'background' must be 0, got {labels[BACKGROUND]!r}"]
    problems, values = [], []
    has_regions = False
    for name, value in labels.items():
        parts = value if isinstance(value, (list, tuple)) else [value]
        has_regions |= isinstance(value, (list, tuple)) and name != IGNORE
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in parts):
            problems.append(f"labels: {name!r} must be a non-negative integer, got {value!r}")
        elif name != IGNORE:
            values += list(parts)
    if problems:
        return problems
    consecutive = sorted(set(values))
    ignore = labels.get(IGNORE)
    if ignore is not None:
        if not isinstance(ignore, int):
            problems.append(f"labels: 'ignore' must be one integer, not a region, got {ignore!r}")
        elif consecutive and ignore <= consecutive[-1]:
            problems.append(f"labels: 'ignore' ({ignore}) must be larger than every other label")
        else:
            consecutive.append(ignore)
    if consecutive != list(range(len(consecutive))):
        problems.append(f"labels: values must be consecutive 0, 1, 2, ...; got {consecutive}")
    if has_regions and regions_class_order is None:
        problems.append("labels: region-based labels (lists) need 'regions_class_order'")
    return problems


def validate_dataset_json(dataset: Mapping[str, Any], where: str | Path = "dataset.json") -> None:
    """Raise a UserError naming `where` and every rule of nnU-Net v2 that `dataset` breaks."""
    problems = dataset_json_problems(dataset)
    if problems:
        raise UserError(format_problems(f"{where}: not a valid nnU-Net v2 dataset.json", problems))
