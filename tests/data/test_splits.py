"""Seeded, group-aware splits."""

import json

import pytest

from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.splits import group_keys, make_splits
from synthmed.errors import UserError


def _groups(n_patients=13, scans=(1, 2, 3, 4)):
    ids = [f"p{p:02d}_s{s}" for p in range(n_patients) for s in range(scans[p % len(scans)])]
    return group_keys(ids, [None] * len(ids), r"^(p\d+)_")


def _check_groups_do_not_straddle(groups, splits):
    owner = {}
    parts = {"train": splits["train"], "val": splits["val"], "test": splits["test"]}
    parts.update({f"fold{i}": f for i, f in enumerate(splits["folds"])})
    for name, ids in parts.items():
        for i in ids:
            key = (groups[i], "fold" if name.startswith("fold") else "split")
            assert owner.setdefault(key, name) == name, f"group {groups[i]} in {owner[key]} and {name}"


def test_same_seed_same_split_other_seed_differs():
    groups = _groups()
    a = make_splits(groups, seed=3, k_folds=3)
    b = make_splits(dict(reversed(list(groups.items()))), seed=3, k_folds=3)  # input order irrelevant
    assert json.dumps(a) == json.dumps(b)
    c = make_splits(groups, seed=4, k_folds=3)
    assert (c["train"], c["test"]) != (a["train"], a["test"])


def test_groups_never_straddle_splits_or_folds():
    groups = _groups()
    for seed in range(10):
        s = make_splits(groups, seed=seed, test_fraction=0.2, val_fraction=0.15, k_folds=4)
        _check_groups_do_not_straddle(groups, s)
        assert sorted(s["train"] + s["val"] + s["test"]) == sorted(groups)
        assert sorted(i for f in s["folds"] for i in f) == s["train"]  # folds partition train
        assert len(s["folds"]) == 4 and all(s["folds"])


def test_fractions_are_approximately_met():
    ids = [f"c{i:03d}" for i in range(100)]
    s = make_splits(group_keys(ids, [None] * 100, None), seed=0, test_fraction=0.2, val_fraction=0.1, k_folds=5)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (70, 10, 20)
    assert sorted(len(f) for f in s["folds"]) == [14] * 5


def test_too_few_groups():
    groups = _groups(n_patients=4)
    with pytest.raises(UserError, match="found 10 case.* in 4 group.*need at least 7 groups"):
        make_splits(groups, k_folds=5)
    s = make_splits(groups, k_folds=0, test_fraction=0.2, val_fraction=0.0)
    assert s["folds"] == [] and s["val"] == [] and s["test"]


def test_group_regex_errors():
    with pytest.raises(UserError, match="no capture group"):
        group_keys(["a_1"], [None], r"a_\d")
    with pytest.raises(UserError, match="does not match 1 case id.*: b_1"):
        group_keys(["a_1", "b_1"], [None, None], r"^(a)_")
    with pytest.raises(UserError, match="invalid regular expression"):
        group_keys(["a_1"], [None], r"(")


def test_prepare_splits_reproducible_and_group_aware(tmp_path, toy_msd):
    opts = dict(shape=(16, 16, 16), folds=2, group_regex=r"^(toy_0\d)\d$")  # groups of 10 and 2 ids
    with pytest.raises(UserError, match="need at least 4 groups"):
        prepare_dataset([toy_msd], tmp_path / "x", PrepareOptions(**opts), progress=False)
    opts.update(group_regex=r"^toy_0\d([0-5])$")  # toy_006..toy_009 do not match
    with pytest.raises(UserError, match="does not match 4 case id"):
        prepare_dataset([toy_msd], tmp_path / "x", PrepareOptions(**opts), progress=False)
    opts.update(group_regex=r"^toy_0(\d)\d$", folds=0, val_fraction=0.0, test_fraction=0.2)
    m1 = json.loads(prepare_dataset([toy_msd], tmp_path / "a", PrepareOptions(**opts), progress=False).read_text())
    m2 = json.loads(prepare_dataset([toy_msd], tmp_path / "b", PrepareOptions(**opts), progress=False).read_text())
    assert json.dumps(m1["splits"]) == json.dumps(m2["splits"])
    groups = {c["id"]: c["group"] for c in m1["cases"]}
    assert set(groups.values()) == {"0", "1"}
    _check_groups_do_not_straddle(groups, m1["splits"])


def test_datalist_groups_are_used(tmp_path, toy_datalist):
    data = json.loads(toy_datalist.read_text())
    for i, e in enumerate(data["training"]):
        e["group"] = f"patient{i // 3}"  # 4 patients of 3 cases
    toy_datalist.write_text(json.dumps(data))
    opts = PrepareOptions(shape=(16, 16, 16), folds=2, test_fraction=0.25, val_fraction=0.0)
    m = json.loads(prepare_dataset([toy_datalist], tmp_path / "o", opts, progress=False).read_text())
    groups = {c["id"]: c["group"] for c in m["cases"]}
    assert len(m["splits"]["test"]) == 3 and len({groups[i] for i in m["splits"]["test"]}) == 1
    _check_groups_do_not_straddle(groups, m["splits"])
