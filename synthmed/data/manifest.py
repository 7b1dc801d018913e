"""The split manifest written by `synthmed prepare`: the single source of truth about the cases.

Layout of a prepared folder::

    OUT/manifest.json
    OUT/cases/<id>.npz     # np.savez: image float32 [C,*S] in [-1, 1], mask uint8 [*S]

3D: S = (D, H, W) and C = 1, or C channels (multi-channel volumes). 2D: S = (H, W) and C = 1
(grayscale) or 3 (RGB).

``manifest.json`` top-level keys (format_version 1): ``format`` ("synthmed-manifest"),
``format_version``, ``synthmed_version``, ``created`` (ISO time), ``sources`` (name, absolute path,
kind), ``labels`` (str(index) -> name), ``label_values`` (str(index) -> the label's value in the source
masks), ``preprocessing``, ``cases`` and ``splits`` (seed, fractions, k_folds, group_regex,
train/val/test id lists, folds).

Labels are consecutive class indices 0..L-1 (background 0, a label named ``ignore`` last, as nnU-Net
wants them), whatever values the source masks used: the cached masks hold the indices, and
``label_values`` maps each back to its source value (BraTS: ``{"0": 0, "1": 1, "2": 2, "3": 4}``). A
manifest without ``label_values`` (written before it existed) has consecutive labels equal to its
source values.

``preprocessing`` always has ``dims`` (3 or 2; a manifest without it is 3D), ``shape``,
``shape_mode``, ``modality`` and ``intensity`` (window ``lo``/``hi``, or percentiles with the median
case range ``reference_lo``/``reference_hi``). Multi-channel volumes add ``channels`` (C), make
``modality`` the list of channel names and ``intensity`` ``{"mode": "per_channel", "channels": [{"name",
"mode", ...window or percentile keys}, ...]}``; each case's ``intensity`` then holds lists of C ``lo``/``hi``. 3D adds orientation, spacing and foreground_margin.
2D adds ``channels``, ``bit_depth`` (8 or 16: the depth synthetic PNGs are written with),
``input`` ("images", "slices" or "mosaic"), ``spacing_unit`` ("pixel": input pixels, or "mm" for
slices) and, per input, ``masks`` (how 2D masks were read) or ``slicing`` (axis, volume spacing, ...).

Each case has id, source, group, raw files, original shape (2D images: the original [H, W]; slices:
the volume's), final ``shape``, ``spacing`` (3D: [sz, sy, sx] mm; 2D: [sy, sx]), ``affine`` (3D: 4x4;
2D: null), intensity lo/hi mapped to -1/1, label voxel (2D: pixel) counts by class index, foreground voxels lost to
the crop, fixes applied, and the cache file; slices also name their ``volume_id`` and slice index.

Read it with `load_manifest`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from synthmed.errors import UserError
from synthmed.fileio import sha256_file

MANIFEST_FORMAT = "synthmed-manifest"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOP_LEVEL_KEYS = (
    "format",
    "format_version",
    "synthmed_version",
    "created",
    "sources",
    "labels",
    "label_values",
    "preprocessing",
    "cases",
    "splits",
)
OPTIONAL_KEYS = ("label_values",)  # absent from manifests written before it existed
SPLIT_NAMES = ("train", "val", "test", "trainval")


class Manifest:
    """A loaded manifest. Use `load_manifest` to build one."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path  # the manifest.json file
        self.root = path.parent  # the prepared folder; case caches are relative to it
        self.data = data  # the whole JSON document
        self.labels: dict[int, str] = {int(k): v for k, v in data["labels"].items()}  # class index -> name
        self.label_values: dict[int, int] = _label_values(path, self.labels, data.get("label_values"))
        self.preprocessing: dict[str, Any] = data["preprocessing"]
        self.cases: list[dict[str, Any]] = data["cases"]
        self.splits: dict[str, Any] = data["splits"]
        self.sha256: str = sha256_file(path)
        self._by_id = {c["id"]: c for c in self.cases}

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r}, {len(self.cases)} cases)"

    def case(self, case_id: str) -> dict[str, Any]:
        """The manifest entry of `case_id`.

        Raises:
            UserError: when no case has that id.
        """
        try:
            return self._by_id[case_id]
        except KeyError:
            raise UserError(f"{self.path}: no case with id {case_id!r}") from None

    def cache_path(self, case_id: str) -> Path:
        """Absolute path of the case's ``.npz`` cache."""
        return self.root / self.case(case_id)["cache"]

    def split_ids(self, split: str, fold: int | None = None, part: str = "train") -> list[str]:
        """Case ids of `split` ("train", "val", "test" or "trainval" = train + val).

        With `fold` given (only for "train"), `part="train"` gives the fold's training part (train
        minus folds[fold]) and `part="val"` gives folds[fold].

        Raises:
            UserError: for an unknown split or part, or a fold out of range.
        """
        if split not in SPLIT_NAMES:
            raise UserError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_NAMES)}")
        if split == "trainval":
            ids = sorted(self.splits["train"] + self.splits["val"])
        else:
            ids = list(self.splits[split])
        if fold is None:
            return ids
        if split != "train":
            raise UserError(f"folds partition the train split; got split {split!r} with fold {fold}")
        if part not in ("train", "val"):
            raise UserError(f"unknown fold part {part!r}; valid parts: train, val")
        folds = self.splits["folds"]
        if not 0 <= fold < len(folds):
            raise UserError(
                f"{self.path}: fold {fold} out of range; this manifest has {len(folds)} folds"
                + (f" (0..{len(folds) - 1})" if folds else " (prepare with --folds k)")
            )
        held_out = set(folds[fold])
        if part == "val":
            return sorted(held_out)
        return [i for i in ids if i not in held_out]


def _label_values(path: Path, labels: dict[int, str], recorded: dict[str, int] | None) -> dict[int, int]:
    """Class index -> source value (identity when not recorded), after checking that the indices are 0..L-1.

    Raises:
        UserError: labels that are not consecutive (a manifest from a synthmed that kept the source
            values), or ``label_values`` that do not match the labels.
    """
    if sorted(labels) != list(range(len(labels))):
        raise UserError(
            f"{path}: labels {sorted(labels)} are not the consecutive class indices 0..{len(labels) - 1} that "
            f"training and sampling need (a manifest written before label values were remapped); run "
            f"`synthmed prepare` again"
        )
    ignore = [k for k, name in labels.items() if str(name).casefold() == "ignore"]
    if ignore and ignore[0] != len(labels) - 1:
        raise UserError(f"{path}: label {ignore[0]} 'ignore' is not the last class index, as nnU-Net needs it (a "
                        f"manifest written before labels were ordered for nnU-Net); run `synthmed prepare` again")
    if recorded is None:
        return {k: k for k in labels}
    try:
        values = {int(k): int(v) for k, v in recorded.items()}
    except (AttributeError, TypeError, ValueError):
        raise UserError(f"{path}: label_values must map class indices to integer values, got {recorded!r}") from None
    if sorted(values) != sorted(labels) or values.get(0) != 0 or len(set(values.values())) != len(values):
        raise UserError(f"{path}: label_values {recorded} must give each label {sorted(labels)} its own source "
                        f"value, with 0 for 0")
    return values


def load_manifest(path_or_dir: str | os.PathLike) -> Manifest:
    """Load ``manifest.json`` from a prepared folder (or the file itself).

    Raises:
        UserError: naming the file when it is missing, not JSON, or not a synthmed manifest.
    """
    path = Path(path_or_dir).expanduser().resolve()
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path}: manifest not found (run `synthmed prepare` first)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read manifest ({e})") from e
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: not a synthmed manifest (format {found!r}, expected {MANIFEST_FORMAT!r})")
    if data.get("format_version") != MANIFEST_VERSION:
        raise UserError(
            f"{path}: manifest format_version {data.get('format_version')!r}, this synthmed reads "
            f"version {MANIFEST_VERSION}"
        )
    missing = [k for k in TOP_LEVEL_KEYS if k not in data and k not in OPTIONAL_KEYS]
    if missing:
        raise UserError(f"{path}: manifest lacks key(s) {', '.join(missing)}")
    return Manifest(path, data)


def parse_real_spec(spec: str) -> tuple[Manifest, str]:
    """``MANIFEST[:split]`` -> (manifest, split); the split defaults to "train".

    Raises:
        UserError: unknown split or unreadable manifest.
    """
    path, split = spec, "train"
    head, sep, tail = spec.rpartition(":")
    if sep and head and "/" not in tail and "\\" not in tail:
        if tail not in SPLIT_NAMES:
            raise UserError(f"--real {spec}: unknown split {tail!r}; valid splits: {', '.join(SPLIT_NAMES)}")
        path, split = head, tail
    return load_manifest(path), split
