"""Splits a dataset brings with it: a datalist's ``validation`` / ``testing`` lists, an nnU-Net or MSD
folder's ``imagesTs``/``labelsTs``, and ``--split-file`` (a JSON of ids per split, or nnU-Net's
``splits_final.json``: a list of folds, each ``{"train": [...], "val": [...]}``).

Rule (`make_given_splits`): every case given a split keeps it, and so does every other case of its
group (a group given two different splits is refused: the same patient would be on both sides). The
cases without one are the pool: the seeded split (`splits.make_splits`) draws from it only the parts
that were not given (test and/or validation, at ``--test-fraction`` / ``--val-fraction`` of the
pool), the rest of the pool is training. The folds are the split file's (nnU-Net's validation
folds: its cases are the training set, the pool is the test set), else seeded over the training cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from synthmed.data.discover import Source
from synthmed.data.splits import make_splits
from synthmed.errors import UserError, format_problems

SPLIT_PARTS = ("train", "val", "test")
SPLIT_KEY_ALIASES = {"train": "train", "training": "train", "val": "val", "validation": "val",
                     "test": "test", "testing": "test"}
SHOWN_IDS = 5  # ids named in a message; the rest are counted


def _shown(ids: list[str]) -> str:
    return ", ".join(ids[:SHOWN_IDS]) + (f" ... ({len(ids)} in all)" if len(ids) > SHOWN_IDS else "")


def _id_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: expected a list of case ids (strings), found {type(value).__name__}")
    return value


def read_split_file(path: Path) -> tuple[dict[str, str], list[list[str]] | None]:
    """(case id -> "train" | "val" | "test", folds or None) from a split file.

    Raises:
        UserError: unreadable JSON, unknown keys, an id listed in two splits.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"--split-file {path}: cannot read ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise UserError(f"--split-file {path}: invalid JSON ({e})") from e
    given: dict[str, str] = {}
    folds = None
    if isinstance(raw, list):  # nnU-Net splits_final.json: folds over the training cases
        folds = []
        for i, fold in enumerate(raw):
            if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
                raise UserError(f"--split-file {path}: fold {i}: expected {{'train': [...], 'val': [...]}} "
                                f"(nnU-Net's splits_final.json)")
            folds.append(sorted(_id_list(fold["val"], f"--split-file {path}: fold {i} 'val'")))
            for case_id in _id_list(fold["train"], f"--split-file {path}: fold {i} 'train'") + folds[-1]:
                given[case_id] = "train"
        return given, folds
    if not isinstance(raw, dict) or not raw or set(raw) - set(SPLIT_KEY_ALIASES):
        raise UserError(f"--split-file {path}: expected {{'train': [ids], 'val': [ids], 'test': [ids]}} "
                        f"(or training/validation/testing) or nnU-Net's splits_final.json list of folds")
    for key, ids in raw.items():
        part = SPLIT_KEY_ALIASES[key]
        for case_id in _id_list(ids, f"--split-file {path}: {key!r}"):
            if given.get(case_id, part) != part:
                raise UserError(f"--split-file {path}: case {case_id!r} is listed in {given[case_id]!r} and {part!r}")
            given[case_id] = part
    return given, folds


def merge_given(case_ids: list[str], by_input: dict[str, str], by_file: dict[str, str], file: Path | None) -> dict[str, str]:
    """The split file's assignments over those of the inputs (datalist lists, imagesTs).

    Raises:
        UserError: the split file names unknown ids, or contradicts the inputs.
    """
    problems = []
    unknown = sorted(set(by_file) - set(case_ids))
    if unknown:
        problems.append(f"--split-file {file}: {len(unknown)} id(s) are not case ids of the inputs: {_shown(unknown)}")
    clash = sorted(i for i in by_file if i in by_input and by_input[i] != by_file[i])
    if clash:
        problems.append(f"--split-file {file}: {len(clash)} case(s) contradict the split the input gives them "
                        f"(e.g. {clash[0]!r}: {by_file[clash[0]]} in the file, {by_input[clash[0]]} in the input)")
    if problems:
        raise UserError(format_problems("Cannot use the given splits", problems))
    return {**by_input, **by_file}


def _group_splits(groups: dict[str, str], given: dict[str, str]) -> dict[str, str]:
    """Group -> its given split. Raises: UserError naming groups given two splits."""
    by_group: dict[str, dict[str, list[str]]] = {}
    for case_id, part in given.items():
        by_group.setdefault(groups[case_id], {}).setdefault(part, []).append(case_id)
    problems = [
        f"group {g!r} is in {' and '.join(sorted(parts))} ("
        + "; ".join(f"{p}: {_shown(sorted(ids))}" for p, ids in sorted(parts.items())) + ")"
        for g, parts in sorted(by_group.items()) if len(parts) > 1
    ]
    if problems:
        raise UserError(format_problems(
            "The given splits put one group (e.g. one patient) in two splits; fix the split, or the grouping "
            "(--group-regex, datalist 'group')", problems))
    return {g: next(iter(parts)) for g, parts in by_group.items()}


def _given_folds(train: list[str], folds: list[list[str]]) -> list[list[str]]:
    """The split file's folds, checked to partition the training cases. Raises: UserError."""
    listed = [i for f in folds for i in f]
    missing, extra = sorted(set(train) - set(listed)), sorted(set(listed) - set(train))
    if missing or extra or len(listed) != len(set(listed)):
        raise UserError(
            "the split file's folds do not partition the training cases: "
            f"{len(missing)} training case(s) in no fold ({_shown(missing)}), {len(extra)} fold case(s) not in "
            f"training ({_shown(extra)}), {len(listed) - len(set(listed))} listed twice"
        )
    return [sorted(f) for f in folds]


def make_given_splits(
    groups: dict[str, str], given: dict[str, str], folds: list[list[str]] | None, *, seed: int,
    test_fraction: float, val_fraction: float, k_folds: int, group_regex: str | None, given_by: str,
) -> dict:
    """The manifest's splits when some cases were given a split (see the module docstring).

    Args:
        groups: case id -> group key; given: case id -> "train" | "val" | "test" for the cases given one;
        folds: the split file's folds, or None for seeded ones; given_by: what gave them, for the manifest.

    Raises:
        UserError: a group in two splits, folds that do not partition the training cases, or a pool too
            small for the parts it must fill.
    """
    group_split = _group_splits(groups, given)
    parts: dict[str, list[str]] = {p: [] for p in SPLIT_PARTS}
    pool = {}
    for case_id, group in groups.items():
        if group in group_split:
            parts[group_split[group]].append(case_id)
        else:
            pool[case_id] = group
    given_parts = sorted(set(group_split.values()), key=SPLIT_PARTS.index)
    if pool and folds is not None and "test" not in given_parts:  # nnU-Net: what no fold lists is test
        parts["test"] += list(pool)
    elif pool:
        seeded = make_splits(pool, seed, 0 if "test" in given_parts else test_fraction,
                             0 if "val" in given_parts else val_fraction, 0, group_regex)
        for p in SPLIT_PARTS:
            parts[p] += seeded[p]
    train = sorted(parts["train"])
    if folds is not None:
        folds = _given_folds(train, folds)
    elif k_folds >= 2:
        folds = make_splits({i: groups[i] for i in train}, seed, 0, 0, k_folds, group_regex)["folds"]
    return {
        "seed": int(seed), "test_fraction": float(test_fraction), "val_fraction": float(val_fraction),
        "k_folds": len(folds or []), "group_regex": group_regex,
        "train": train, "val": sorted(parts["val"]), "test": sorted(parts["test"]), "folds": folds or [],
        "given": given_parts, "given_by": given_by,
    }


@dataclass
class GivenSplits:
    """The splits the inputs and ``--split-file`` give, keyed by input image file (a volume's slices
    share its file, so they share its split)."""

    by_image: dict[str, str]  # image file -> "train" | "val" | "test"
    folds: list[set[str]] | None  # the split file's folds as sets of image files, else None
    by: str  # what gave them, e.g. "datalist 'testing' list, --split-file splits_final.json"

    def of_entries(self, entries: list[dict]) -> tuple[dict[str, str], list[list[str]] | None]:
        """(case id -> split, folds of case ids) for the prepared `entries`."""
        given = {e["id"]: self.by_image[e["image_file"]] for e in entries if e["image_file"] in self.by_image}
        folds = None if self.folds is None else [
            sorted(e["id"] for e in entries if e["image_file"] in fold) for fold in self.folds
        ]
        return given, folds


def collect_given_splits(sources: list[Source], split_file: Path | None) -> GivenSplits | None:
    """The splits given by the inputs (`CaseRecord.given_split`) and the split file; None when none is.

    Raises:
        UserError: see `read_split_file` and `merge_given`.
    """
    records = [r for s in sources for r in s.cases]
    by_input = {r.id: r.given_split for r in records if r.given_split}
    by = sorted({"imagesTs/labelsTs" if s.kind == "msd" else
                 f"datalist {'validation' if r.given_split == 'val' else 'testing'} list"
                 for s in sources for r in s.cases if r.given_split})
    by_file, file_folds = read_split_file(split_file) if split_file is not None else ({}, None)
    if split_file is not None:
        by.append(f"--split-file {Path(split_file).name}")
    given = merge_given([r.id for r in records], by_input, by_file, split_file)
    if not given:
        return None
    image_of = {r.id: str(r.image) for r in records}
    folds = None if file_folds is None else [{image_of[i] for i in fold} for fold in file_folds]
    return GivenSplits({image_of[i]: part for i, part in given.items()}, folds, ", ".join(by))
