"""Seeded, group-aware train/val/test splits and k folds of the training cases.

A group is a set of cases that must stay together (e.g. scans of one patient). Its key is the first
capture group of `group_regex` matched against the case id, else the datalist's "group", else the
case id itself. Whole groups are assigned, so the fractions are approximate: groups are shuffled
with `seed`, then the test set and the validation set each take groups until they hold at least
round(fraction x n_cases) cases (at least one group when the fraction is > 0). The remaining groups
are the training set, dealt into `k_folds` folds, each group to the fold with the fewest cases.
Equal inputs and seed give identical splits.
"""

from __future__ import annotations

import re

import numpy as np

from synthmed.errors import UserError, format_problems


def group_keys(
    ids: list[str], datalist_groups: list[str | None], group_regex: str | None
) -> dict[str, str]:
    """Case id -> group key.

    Raises:
        UserError: when the regex is invalid, has no capture group, or does not match some ids.
    """
    if group_regex is None:
        return {i: (g if g is not None else i) for i, g in zip(ids, datalist_groups)}
    try:
        pattern = re.compile(group_regex)
    except re.error as e:
        raise UserError(f"--group-regex {group_regex!r}: invalid regular expression ({e})") from e
    if pattern.groups < 1:
        raise UserError(
            f"--group-regex {group_regex!r} has no capture group; wrap the group key in "
            f"parentheses, e.g. '^(patient\\d+)_'"
        )
    keys, unmatched = {}, []
    for case_id in ids:
        m = pattern.search(case_id)
        if m is None or m.group(1) is None:
            unmatched.append(case_id)
        else:
            keys[case_id] = m.group(1)
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else "")
        raise UserError(
            f"--group-regex {group_regex!r} does not match {len(unmatched)} case id(s): {shown}"
        )
    return keys


def split_problems(
    n_groups: int, n_cases: int, test_fraction: float, val_fraction: float, k_folds: int
) -> list[str]:
    """Why a split of `n_groups` groups is impossible ([] when it is possible)."""
    needed = int(test_fraction > 0) + int(val_fraction > 0) + max(k_folds, 1)
    if n_groups >= needed:
        return []
    parts = []
    if test_fraction > 0:
        parts.append("1 for test")
    if val_fraction > 0:
        parts.append("1 for validation")
    parts.append(f"{max(k_folds, 1)} for training" + (f" ({k_folds} folds)" if k_folds > 1 else ""))
    return [
        f"too few cases for the requested split: found {n_cases} case(s) in {n_groups} group(s), "
        f"need at least {needed} groups ({', '.join(parts)}); lower --folds, --test-fraction or "
        f"--val-fraction, or add cases"
    ]


def make_splits(
    groups: dict[str, str],
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    k_folds: int = 5,
    group_regex: str | None = None,
) -> dict:
    """Split the cases of `groups` (case id -> group key) into train/val/test and folds.

    Returns:
        The manifest's "splits" entry: seed, fractions, k_folds, group_regex, train, val, test
        (sorted id lists) and folds (k sorted id lists partitioning train; [] when k_folds < 2).

    Raises:
        UserError: when there are too few groups for the request.
    """
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise UserError(
            f"--test-fraction {test_fraction} and --val-fraction {val_fraction} must each be in "
            f"[0, 1) and sum to less than 1"
        )
    if k_folds < 0 or k_folds == 1:
        raise UserError(f"--folds {k_folds}: use 0 (no folds) or at least 2")
    members: dict[str, list[str]] = {}
    for case_id in sorted(groups):
        members.setdefault(groups[case_id], []).append(case_id)
    n_cases = len(groups)
    problems = split_problems(len(members), n_cases, test_fraction, val_fraction, k_folds)
    if problems:
        raise UserError(format_problems("Cannot split the dataset", problems))

    order = sorted(members)
    perm = np.random.default_rng(seed).permutation(len(order))
    queue = [order[i] for i in perm]
    reserve = max(k_folds, 1)  # groups that must stay for training

    def take(fraction: float, keep: int) -> list[str]:
        # take groups until `fraction` of the cases is reached, leaving at least `keep` groups
        if fraction <= 0:
            return []
        target = max(1, round(fraction * n_cases))
        taken, count = [], 0
        while count < target and len(queue) > keep:
            g = queue.pop(0)
            taken.append(g)
            count += len(members[g])
        return taken

    test_groups = take(test_fraction, keep=reserve + int(val_fraction > 0))
    val_groups = take(val_fraction, keep=reserve)
    train_groups = queue

    folds: list[list[str]] = []
    if k_folds >= 2:
        folds = [[] for _ in range(k_folds)]
        sizes = [0] * k_folds
        # largest groups first so the folds balance; ties keep the shuffled order (stable sort)
        for g in sorted(train_groups, key=lambda g: -len(members[g])):
            j = int(np.argmin(sizes))
            folds[j] += members[g]
            sizes[j] += len(members[g])
        folds = [sorted(f) for f in folds]

    def ids_of(gs: list[str]) -> list[str]:
        return sorted(i for g in gs for i in members[g])

    return {
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "val_fraction": float(val_fraction),
        "k_folds": int(k_folds),
        "group_regex": group_regex,
        "train": ids_of(train_groups),
        "val": ids_of(val_groups),
        "test": ids_of(test_groups),
        "folds": folds,
    }
