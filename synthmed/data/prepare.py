"""`synthmed prepare`: raw datasets -> checked, preprocessed cache + split manifest.

`prepare_dataset(inputs, out, options)` discovers the cases (see `discover`), checks every case
(see `checks`; all problems are collected and raised as one `UserError`), preprocesses each, writes
``OUT/cases/<id>.npz`` and ``OUT/manifest.json`` (see `manifest`) with a seeded, group-aware split
(see `splits`). The output folder appears only when everything succeeded; an existing one is refused
unless ``overwrite=True``.

One skeleton serves every kind of input; a case reader (see `case_reader`) plugs in what differs:
3D volumes (`volume_reader`), 2D images (PNG/JPEG/TIFF, detected from the file types;
`image_reader`) and 2D slices or slice mosaics of 3D volumes (``slices``/``mosaic`` options;
`slice_reader`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

import synthmed
from synthmed.data.case_reader import CaseReader, PreparedCase, warn_rare_labels
from synthmed.data.checks import CheckTally, checked_cases
from synthmed.data.discover import CaseRecord, Source, discover_sources
from synthmed.data.given_splits import GivenSplits, collect_given_splits, make_given_splits
from synthmed.data.image_reader import open_images
from synthmed.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION
from synthmed.data.nnunet_json import label_mapping
from synthmed.data.prepare_options import PrepareOptions, make_options
from synthmed.data.slice_reader import open_slices
from synthmed.data.splits import group_keys, make_splits, split_problems
from synthmed.data.volume_reader import open_volumes
from synthmed.errors import UserError
from synthmed.fileio import atomic_directory, atomic_write_json, check_output_folder

__all__ = ["PrepareOptions", "make_options", "prepare_dataset"]  # the options live in prepare_options

log = logging.getLogger(__name__)


def prepare_dataset(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Check, preprocess and split the datasets in `inputs`, writing the prepared folder `out`.

    Args:
        inputs: dataset folders (MSD/nnU-Net or images/ + labels/ or masks/) or datalist JSON files,
            of 3D volumes or 2D images (see `discover`); with ``options.slices`` or ``options.mosaic``
            the 3D volumes are cut into 2D cases.
        out: output folder; it appears only when everything succeeded.
        options: preprocessing and split options (defaults: `PrepareOptions()`).
        overwrite: replace an existing `out` written by `prepare` (see `synthmed.fileio.check_output_folder`).
        progress: show a progress bar over the cases.

    Returns:
        The path of ``out/manifest.json``.

    Raises:
        UserError: bad inputs (every problem of every case, listed at once) or options; `out` is
            then left untouched and no temporary folder remains. Also: `out` is, contains or lies
            inside an input, or exists and was not written by `prepare`.
    """
    options = options or PrepareOptions()
    out = check_output_folder(out, kind="prepare", inputs=inputs, overwrite=overwrite)
    sources = discover_sources(list(inputs), options.mask_suffix)
    reader = open_reader(sources, options, progress)  # before grouping: option errors come first
    records = [c for s in sources for c in s.cases]
    given = collect_given_splits(sources, options.split_file)
    groups = group_keys([r.id for r in records], [r.group for r in records], options.group_regex)
    tally = CheckTally(len(records), [] if given else split_problems(
        len(set(groups.values())), len(records), options.test_fraction, options.val_fraction, options.folds
    ))
    case_files = [f for r in records for f in (r.image, r.label)]
    with atomic_directory(out, kind="prepare", inputs=[*inputs, *case_files], overwrite=overwrite) as tmp:
        # declared labels: masks are written as class indices at once; labels seen: remapped once all are known
        indices = None if reader.declared is None else class_indices(reader.declared)
        written = write_cases(tmp, reader, records, groups, tally, progress, indices)
        tally.problems += reader.dataset_problems()
        tally.raise_if_any()
        warn_empty_masks(written.empty, len(written.entries), reader.element)
        labels = reader.declared
        if labels is None:
            warn_rare_labels([e["id"] for e in written.entries], written.label_counts, reader.element)
            labels = {k: ("background" if k == 0 else f"label_{k}") for k in sorted(tally.labels_seen | {0})}
            log.info("no labels declared; using the labels seen: %s", sorted(labels))
            indices = class_indices(labels)
            remap_cached_masks(tmp, written.entries, indices)
        preprocessing = reader.finish(tmp, written.entries)
        splits = write_manifest(
            tmp, sources, written.entries, written.label_counts, labels, indices, options, preprocessing, given,
        )
    path = out / MANIFEST_NAME
    print(summary_line(reader, sources, path, splits, len(written.entries), len(written.empty), indices))
    return path


def class_indices(labels: dict[int, str]) -> dict[int, int]:
    """Source label value -> consecutive class index (background 0, an ``ignore`` label last), the order
    nnU-Net writes labels in, so that prepared, sampled and exported masks all hold the same values.

    Raises:
        UserError: see `synthmed.data.nnunet_json.label_mapping` (0 missing, repeated names, ...).
    """
    return label_mapping(labels)


def index_table(indices: dict[int, int]) -> np.ndarray | None:
    """uint8 lookup table source value (0..255) -> class index; None when every value is its own index."""
    if all(value == index for value, index in indices.items()):
        return None
    table = np.zeros(256, dtype=np.uint8)
    for value, index in indices.items():
        table[value] = index
    return table


def remap_cached_masks(tmp: Path, entries: list[dict], indices: dict[int, int]) -> None:
    """Rewrite the masks of the cases written under `tmp` with class indices (nothing to do when they are already)."""
    table = index_table(indices)
    if table is None:
        return
    for entry in entries:
        path = tmp / entry["cache"]
        with np.load(path) as cached:
            image, mask = cached["image"], cached["mask"]
        np.savez(path, image=image, mask=table[mask])


def open_reader(sources: list[Source], options: PrepareOptions, progress: bool) -> CaseReader:
    """The case reader for the kind of `sources`: 2D images, slices of 3D volumes, or 3D volumes.

    Raises:
        UserError: options that do not fit that kind of input (e.g. slices of 2D images).
    """
    if sources[0].dims == 2:
        if options.slicing:
            raise UserError("--slices / --mosaic cut 3D volumes; these inputs are already 2D images")
        return open_images(sources, options, progress)
    if options.slicing:
        return open_slices(sources, options)
    return open_volumes(sources, options)


@dataclass
class WrittenCases:
    """What `write_cases` wrote: the manifest entries, their label counts and the empty cases."""

    entries: list[dict] = field(default_factory=list)
    label_counts: list[np.ndarray] = field(default_factory=list)  # per entry: voxels of each value 0..255
    empty: list[str] = field(default_factory=list)  # ids of cases without a labelled voxel


def write_cases(
    tmp: Path, reader: CaseReader, records: list[CaseRecord], groups: dict[str, str], tally: CheckTally,
    progress: bool, indices: dict[int, int] | None = None,
) -> WrittenCases:
    """Check every record with `reader` (problems go to `tally`) and, while none was found, write the
    prepared cases of each to ``tmp/cases/<id>.npz``, their masks remapped by `indices` (source value ->
    class index) when given. The label counts stay by source value."""
    written = WrittenCases()
    table = None if indices is None else index_table(indices)
    (tmp / "cases").mkdir()
    bar = tqdm(records, desc="prepare", unit=reader.unit, disable=not progress or None, leave=False)
    for pair in checked_cases(bar, tally, reader.check):
        for case in reader.prepare(pair):
            written.entries.append(save_case(tmp, case, pair.record.source, groups[pair.record.id], table))
            written.label_counts.append(np.bincount(case.mask.ravel(), minlength=256))
            if case.empty:
                written.empty.append(case.id)
    bar.close()
    return written


def save_case(tmp: Path, case: PreparedCase, source: str, group: str, table: np.ndarray | None = None) -> dict:
    """Write ``cases/<id>.npz`` under `tmp`, the mask through `table` (see `index_table`) when given;
    return the case's manifest entry."""
    cache = f"cases/{case.id}.npz"
    mask = np.asarray(case.mask, dtype=np.uint8)
    np.savez(tmp / cache, image=np.asarray(case.image, dtype=np.float32), mask=mask if table is None else table[mask])
    return {"id": case.id, "source": source, "group": group, **case.fields, "cache": cache}


def warn_empty_masks(empty: list[str], n_cases: int, element: str) -> None:
    """Log the cases without a labelled voxel (`element`: "voxel" or "pixel"), if any."""
    if empty:
        log.warning(
            "%d of %d cases have an empty mask (no labelled %s): %s",
            len(empty), n_cases, element, ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""),
        )


def write_manifest(
    tmp: Path,
    sources: list[Source],
    entries: list[dict],
    label_counts: list[np.ndarray],
    labels: dict[int, str],
    indices: dict[int, int],
    options: PrepareOptions,
    preprocessing: dict,
    given: GivenSplits | None = None,
) -> dict:
    """Fill in each case's labelled voxels per class index from `label_counts` (by source value), split
    the cases by group and write ``manifest.json`` into ``tmp``, its ``labels`` keyed by class index
    (`indices`: source value -> index) with their source values; return the splits."""
    for entry, counts in zip(entries, label_counts):
        entry["label_voxels"] = {str(indices[k]): int(counts[k]) for k in sorted(labels, key=indices.get) if k != 0}
    groups = {e["id"]: e["group"] for e in entries}
    if given is None:
        splits = make_splits(
            groups, options.seed, options.test_fraction, options.val_fraction, options.folds, options.group_regex
        )
    else:
        by_case, folds = given.of_entries(entries)
        splits = make_given_splits(
            groups, by_case, folds, seed=options.seed, test_fraction=options.test_fraction,
            val_fraction=options.val_fraction, k_folds=options.folds, group_regex=options.group_regex, given_by=given.by,
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "synthmed_version": synthmed.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": [{"name": s.name, "path": str(s.path), "kind": s.kind} for s in sources],
        "labels": {str(indices[k]): labels[k] for k in sorted(labels, key=indices.get)},
        "label_values": {str(indices[k]): k for k in sorted(labels, key=indices.get)},
        "preprocessing": preprocessing,
        "cases": entries,
        "splits": splits,
    }
    atomic_write_json(tmp / MANIFEST_NAME, manifest)
    return splits


def summary_line(
    reader: CaseReader, sources: list[Source], manifest: Path, splits: dict, n_cases: int, n_empty: int,
    indices: dict[int, int] | None = None,
) -> str:
    """The printed summary: cases, sources, split sizes, the reader's details, remapped labels and the manifest path."""
    text = reader.summary(n_empty)
    n_folds = len(splits["folds"])
    return (
        f"Prepared {n_cases} {text.cases} from {len(sources)} source(s) "
        f"({', '.join(s.name for s in sources)}) into {manifest.parent}: train {len(splits['train'])}, "
        f"val {len(splits['val'])}, test {len(splits['test'])}"
        + (f", {n_folds} folds of the train cases" if n_folds else "")
        + f" (seed {splits['seed']}). {given_sentence(splits)}{text.details} "
        + "".join(f"{s.name}: {s.id_note}. " for s in sources if s.id_note)
        + remap_sentence(indices or {})
        + f"Manifest: {manifest}"
    )


def given_sentence(splits: dict) -> str:
    """'Given: test by imagesTs/labelsTs; val seeded from the rest. ' ('' when no split was given)."""
    given = splits.get("given")
    if not given:
        return ""
    seeded = [p for p in ("val", "test") if p not in given and splits[p]]
    empty = [p for p in ("val", "test") if p not in given and not splits[p]]
    rest = [f"{' and '.join(seeded)} seeded from the rest"] if seeded else []
    rest += [f"no {p} cases" for p in empty]
    return f"Given: {', '.join(given)} by {splits['given_by']}; {'; '.join(rest) or 'the rest is train'}. "


def remap_sentence(indices: dict[int, int]) -> str:
    """'Label values 0, 1, 4 are written as class indices 0, 1, 2 (...). ' ('' when none was remapped)."""
    if index_table(indices) is None:
        return ""
    values = sorted(indices, key=indices.get)
    return (f"Label values {', '.join(map(str, values))} are written as class indices "
            f"{', '.join(str(indices[v]) for v in values)} (the manifest's label_values maps them back). ")
