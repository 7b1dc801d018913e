"""Study creation: balanced, shuffled, rendered alike, blind ids and files, a private key; bad input."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat

import numpy as np
import pytest
from PIL import Image

from synthmed.data.manifest import Manifest
from synthmed.errors import UserError
from synthmed.fileio import OUTPUT_MARKER
from synthmed.vtt.render import RenderOptions
from synthmed.vtt.study import (
    DB_FILE, ITEM_ID_PATTERN, KEY_FILE, RENDER_FILE_PATTERN, RENDERS_DIR, STUDY_FILE, ItemPool, StudyOptions, build_study,
    create_study, display_spacing, load_key, load_study,
)

from .conftest import STUDY_ITEMS, assert_blind_text, assert_clean_png, write_sphere_set


def _origins_in_order(study_dir) -> list[tuple[str, str]]:
    study = load_study(study_dir)
    key = load_key(study)
    return [(key[i]["origin"], key[i]["case"]) for i in study.item_ids]


def test_study_is_balanced_shuffled_and_blind(base_study):
    study = load_study(base_study)
    key = load_key(study)
    origins = [key[i]["origin"] for i in study.item_ids]
    assert len(origins) == STUDY_ITEMS and origins.count("real") == origins.count("synthetic") == STUDY_ITEMS // 2
    assert origins != sorted(origins) and origins != sorted(origins, reverse=True)  # shuffled, not grouped
    assert all(ITEM_ID_PATTERN.match(i) for i in study.item_ids) and len(set(study.item_ids)) == STUDY_ITEMS
    assert_blind_text((base_study / STUDY_FILE).read_text(), base_study, STUDY_FILE)

    referenced = {f for item in study.renders.values() for layers in item.values() for f in layers.values()}
    on_disk = set(os.listdir(base_study / RENDERS_DIR))
    assert referenced == on_disk and len(on_disk) == STUDY_ITEMS * 3 * 2
    assert all(RENDER_FILE_PATTERN.match(f) for f in on_disk)
    sizes = set()
    for name in on_disk:
        data = (base_study / RENDERS_DIR / name).read_bytes()
        assert_clean_png(data, name)
        sizes.add(Image.open(io.BytesIO(data)).size)
    assert sizes == {(320, 320)}  # 16³ at 1.5 mm: every view of every item has one size

    assert sorted(os.listdir(base_study)) == sorted([KEY_FILE, STUDY_FILE, RENDERS_DIR, DB_FILE, OUTPUT_MARKER])
    assert stat.S_IMODE(os.stat(base_study / KEY_FILE).st_mode) == 0o600
    with sqlite3.connect(base_study / DB_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert sorted(r[0] for r in conn.execute("SELECT item_id FROM items")) == sorted(study.item_ids)
        columns = {r[1] for t in ("items", "rater_items", "ratings") for r in conn.execute(f"PRAGMA table_info({t})")}
        assert "origin" not in columns


def test_selection_and_order_follow_the_seed_but_ids_are_random(vtt_inputs, base_study, tmp_path):
    manifest, synthetic = vtt_inputs
    again = create_study(str(manifest), [synthetic], tmp_path / "again", StudyOptions(n=STUDY_ITEMS, seed=3))
    other = create_study(str(manifest), [synthetic], tmp_path / "other", StudyOptions(n=STUDY_ITEMS, seed=4))
    assert _origins_in_order(again) == _origins_in_order(base_study)
    assert _origins_in_order(other) != _origins_in_order(base_study)
    assert not set(load_study(again).item_ids) & set(load_study(base_study).item_ids)
    assert not set(os.listdir(again / RENDERS_DIR)) & set(os.listdir(base_study / RENDERS_DIR))
    assert load_study(again).study_id != load_study(base_study).study_id


def test_window_in_original_units_changes_the_pixels(vtt_inputs, base_study, tmp_path):
    manifest, synthetic = vtt_inputs
    narrow = create_study(str(manifest), [synthetic], tmp_path / "narrow", StudyOptions(n=STUDY_ITEMS, seed=3, window=(-1000.0, 0.0)))
    render = json.loads((narrow / STUDY_FILE).read_text())["render"]
    assert render["window_original_units"] == [-1000.0, 0.0]
    assert render["window_network_units"] == pytest.approx([(-1000 + 1024) / 1624 * 2 - 1, (0 + 1024) / 1624 * 2 - 1])

    def first_axial(study_dir):
        s = load_study(study_dir)
        return np.asarray(Image.open(s.render_path(s.item_ids[0], "axial", "image")), dtype=int)

    wide, tight = first_axial(base_study), first_axial(narrow)
    assert tight.shape == wide.shape and tight.max() == 255 and wide.max() < 255  # the sphere saturates in the narrow window


def test_several_synthetic_sets_share_the_synthetic_half(vtt_inputs, tmp_path):
    manifest, synthetic = vtt_inputs
    second = write_sphere_set(tmp_path / "spheres_b", manifest, n=3, seed=11)
    study = create_study(str(manifest), [synthetic, second], tmp_path / "s", StudyOptions(n=STUDY_ITEMS, seed=0))
    sets = [e["set"] for e in load_key(load_study(study)).values() if e["origin"] == "synthetic"]
    assert sorted(sets) == ["spheres"] * 2 + ["spheres_b"] * 2


@pytest.mark.parametrize("options,message", [
    (dict(n=7), "must be an even number"),
    (dict(n=20), "has 9 case(s); --n needs 10 real cases"),
    (dict(n=8, window=(5.0, 5.0)), "HI must be greater than LO"),
    (dict(n=8, panel_size=10), "--panel-size 10"),
])
def test_bad_options_are_refused_and_nothing_is_written(vtt_inputs, tmp_path, options, message):
    manifest, synthetic = vtt_inputs
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_study(str(manifest), [synthetic], tmp_path / "s", StudyOptions(**options))
    assert not (tmp_path / "s").exists()


def test_bad_inputs_are_refused(vtt_inputs, base_study, tmp_path):
    manifest, synthetic = vtt_inputs
    with pytest.raises(UserError, match="not a synthetic set"):
        create_study(str(manifest), [tmp_path / "missing"], tmp_path / "s", StudyOptions(n=8))
    with pytest.raises(UserError, match="given twice"):
        create_study(str(manifest), [synthetic, synthetic], tmp_path / "s", StudyOptions(n=8))
    with pytest.raises(UserError, match="already exists"):
        create_study(str(manifest), [synthetic], base_study, StudyOptions(n=8))
    with pytest.raises(UserError, match="unknown split"):
        create_study(f"{manifest}:holdout", [synthetic], tmp_path / "s", StudyOptions(n=8))
    too_few = write_sphere_set(tmp_path / "few", manifest, n=2)
    with pytest.raises(UserError, match="holds 2 pair"):
        create_study(str(manifest), [too_few], tmp_path / "s", StudyOptions(n=8))
    assert not (tmp_path / "s").exists()


def test_a_tampered_study_json_is_refused(base_study, tmp_path):
    import shutil

    copy = shutil.copytree(base_study, tmp_path / "tampered")
    doc = json.loads((copy / STUDY_FILE).read_text())
    doc["items"][0]["renders"]["axial"]["image"] = "../key.json"
    (copy / STUDY_FILE).write_text(json.dumps(doc))
    with pytest.raises(UserError, match="is not a render file name"):
        load_study(copy)
    study = load_study(base_study)
    assert study.render_path("0" * 16, "axial", "image") is None
    assert study.render_path(study.item_ids[0], "axial", "../key.json") is None


@pytest.mark.parametrize("channels", [1, 3])
def test_2d_studies_render_one_view_per_item(tmp_path, channels):
    rng = np.random.default_rng(0)

    def pool(name, origin):
        masks = (rng.uniform(size=(3, 24, 32)) > 0.8).astype(np.int64)
        return ItemPool(name, origin, rng.uniform(-1, 1, (3, channels, 24, 32)).astype(np.float32), masks,
                        [f"{name}_{i}" for i in range(3)])

    render = RenderOptions(window=(-1.0, 1.0), spacing=(1.0, 1.0), panel_size=64)
    out = build_study(tmp_path / "s2d", [pool("photos", "real"), pool("gen", "synthetic")], render,
                      StudyOptions(n=6, seed=1), inputs={})
    study = load_study(out)
    assert study.dims == 2 and study.views == ("image",) and study.view_sizes == {"image": (48, 64)}
    modes = {Image.open(study.render_path(i, "image", "image")).mode for i in study.item_ids}
    assert modes == {"L" if channels == 1 else "RGB"}
    assert [e["origin"] for e in load_key(study).values()].count("real") == 3


def test_display_spacing_is_one_value_for_the_whole_study(tmp_path):
    def manifest(preprocessing, spacings):
        path = tmp_path / "manifest.json"
        path.write_text("{}")
        cases = [{"id": f"c{i}", "spacing": s} for i, s in enumerate(spacings)]
        return Manifest(path, {"labels": {"0": "background"}, "preprocessing": preprocessing, "cases": cases, "splits": {}})

    assert display_spacing(manifest({"spacing": [1.0, 2.0, 3.0]}, [[9, 9, 9]])) == (1.0, 2.0, 3.0)
    assert display_spacing(manifest({"spacing": None}, [[1, 1, 2], [1, 1, 4], [1, 3, 3]])) == (1.0, 1.0, 3.0)
    assert display_spacing(manifest({"dims": 2, "spacing": None}, [[0.5, 0.5], [0.5, 0.7], [0.5, 0.6]])) == (0.5, 0.6)
    with pytest.raises(UserError, match="expected 3 positive numbers"):
        display_spacing(manifest({"spacing": [1.0, 0.0, 1.0]}, []))


TOY_CARD = {"format": "synthmed-card", "format_version": 1, "model": "flip", "checkpoint": {"path": "none", "sha256": "0" * 64}}


def test_2d_study_from_a_prepared_folder_and_a_png_set(toy_prepared_2d, tmp_path):
    from synthmed.data.dataset import load_arrays
    from synthmed.data.manifest import load_manifest
    from synthmed.sample.writers import write_synthetic_set

    manifest = load_manifest(toy_prepared_2d)
    images, masks = load_arrays(manifest, manifest.split_ids("test"))
    flipped = write_synthetic_set(tmp_path / "png_set", images[:, :, ::-1].copy(), masks[:, ::-1].copy(),
                                  intensity=manifest.preprocessing["intensity"], affine=None, modality="image", card=TOY_CARD,
                                  labels={str(k): v for k, v in manifest.labels.items()})
    out = create_study(str(toy_prepared_2d), [flipped], tmp_path / "s", StudyOptions(n=8, seed=0))
    study = load_study(out)
    assert study.dims == 2 and study.views == ("image",) and study.view_sizes == {"image": (320, 320)}
    assert {Image.open(study.render_path(i, "image", "image")).mode for i in study.item_ids} == {"L"}
    key = load_key(study)
    assert sorted(e["origin"] for e in key.values()) == ["real"] * 4 + ["synthetic"] * 4
    assert_blind_text((out / STUDY_FILE).read_text(), out, STUDY_FILE)
