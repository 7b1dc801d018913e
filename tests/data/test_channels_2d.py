"""2D images of several grey channel files: nnU-Net ``case_0000.png … case_000N.png`` with channel_names
in dataset.json, and a datalist ``"image": [a.png, b.png]``. Each channel is mapped with its own range
(checked against the files), and a 2-channel set goes prepare -> train (dcgan2d) -> sample (one PNG per
channel) -> evaluate -> downstream -> export -> vtt, all through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from synthmed.cli import main
from synthmed.data.analyze import analyze_dataset
from synthmed.data.toy2d import toy_disc
from synthmed.sample.synthetic_set import load_synthetic_set
from tests.tiny_downstream import run_tiny_downstream
from tests.train.test_training import tiny_config

NAMES = ["T1", "T2"]
CHANNEL_LEVELS = ((1000, 3000), (20000, 5000))  # (background, disc) per channel: different ranges and contrasts


def write_toy_channels_2d(root: Path, layout: str, n: int = 10, size: int = 32, seed: int = 0, bits: int = 16) -> Path:
    """`n` cases of two grey channel PNGs (16-bit; `bits` 8: levels divided by 256) and a 0/255 mask;
    returns what to give `prepare` (the nnU-Net folder, or the datalist JSON)."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        case = f"c{i:02d}"
        disc = toy_disc((size, size), rng)
        files = [f"imagesTr/{case}_{c:04d}.png" for c in range(len(CHANNEL_LEVELS))]
        for f, (background, level) in zip(files, CHANNEL_LEVELS):
            pixels = np.where(disc, level, background) + rng.normal(0, 100, disc.shape)
            pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
            Image.fromarray(pixels if bits == 16 else (pixels // 256).astype(np.uint8)).save(root / f)
        Image.fromarray(disc.astype(np.uint8) * 255).save(root / "labelsTr" / f"{case}.png")
        entries.append({"image": files, "label": f"labelsTr/{case}.png", "id": case})
    names = {str(c): name for c, name in enumerate(NAMES)}
    if layout == "datalist":
        path = root / "datalist.json"
        path.write_text(json.dumps({"channel_names": names, "labels": {"0": "background", "1": "disc"},
                                    "training": entries}))
        return path
    (root / "dataset.json").write_text(json.dumps({"name": "toy2d_channels", "channel_names": names,
                                                   "labels": {"background": 0, "disc": 1}, "numTraining": n,
                                                   "file_ending": ".png"}))
    return root


def _file_range(root: Path, channel: int) -> tuple[float, float]:
    values = [np.asarray(Image.open(p)) for p in sorted((root / "imagesTr").glob(f"*_{channel:04d}.png"))]
    return float(min(v.min() for v in values)), float(max(v.max() for v in values))


def _prepare(raw: Path, out: Path, *extra: str, folds: int = 0) -> dict:
    assert main(["prepare", str(raw), "--out", str(out), "--test-fraction", "0.2", "--val-fraction", "0",
                 "--folds", str(folds), *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("layout", ["nnunet", "datalist"])
def test_both_layouts_map_each_channel_with_its_own_range(tmp_path, layout):
    raw = write_toy_channels_2d(tmp_path / "raw", layout, n=6)
    manifest = _prepare(raw, tmp_path / "prep")
    pre = manifest["preprocessing"]
    assert pre["channels"] == 2 and pre["modality"] == NAMES and pre["bit_depth"] == 16
    assert pre["intensity"]["mode"] == "per_channel"
    root = raw if raw.is_dir() else raw.parent
    for c, entry in enumerate(pre["intensity"]["channels"]):
        assert entry["name"] == NAMES[c] and entry["from"] == "data range"
        assert (entry["lo"], entry["hi"]) == _file_range(root, c)
    case = manifest["cases"][0]
    with np.load(tmp_path / "prep" / case["cache"]) as z:
        image = z["image"]
    assert image.shape == (2, 32, 32) and image.min() >= -1 and image.max() <= 1
    raw_0 = np.asarray(Image.open(case["image_file"])).astype(np.float64)  # channel 0 back from [-1, 1]
    lo, hi = pre["intensity"]["channels"][0]["lo"], pre["intensity"]["channels"][0]["hi"]
    assert np.allclose((image[0] + 1) / 2 * (hi - lo) + lo, raw_0, atol=0.05)
    [source] = analyze_dataset([raw], print_report=False)["sources"]
    assert source["summary"]["channels"] == [2]
    assert [c["min"]["min"] for c in source["summary"]["intensity_per_channel"]] == [_file_range(root, c)[0] for c in range(2)]
    percentile = _prepare(raw, tmp_path / "prep_pct", "--intensity", "percentile")["preprocessing"]["intensity"]
    assert [c["mode"] for c in percentile["channels"]] == ["percentile", "percentile"]
    assert percentile["channels"][1]["reference_lo"] > percentile["channels"][0]["reference_hi"]  # its own range


def test_two_channel_2d_set_through_every_stage(tmp_path, capsys):
    raw = write_toy_channels_2d(tmp_path / "raw", "nnunet", n=10)
    prep, run, syn = tmp_path / "prep", tmp_path / "run", tmp_path / "syn"
    manifest = _prepare(raw, prep, folds=2)
    config = tiny_config(prep / "manifest.json", run, model="dcgan2d", steps=2)
    config["train"]["checkpoint_every"] = 2
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 0
    assert main(["sample", "--checkpoint", str(run), "-n", "3", "--out", str(syn)]) == 0

    written = json.loads((syn / "dataset.json").read_text())
    assert written["channel_names"] == {"0": "T1", "1": "T2"}
    assert sorted(p.name for p in (syn / "imagesTr").glob("syn_0000_*.png")) == ["syn_0000_0000.png", "syn_0000_0001.png"]
    levels = [np.asarray(Image.open(syn / "imagesTr" / f"syn_0000_{c:04d}.png")) for c in range(2)]
    assert all(lv.dtype == np.uint16 and lv.shape == (32, 32) for lv in levels)
    images, masks, _ = load_synthetic_set(syn, (32, 32))
    assert images.shape == (3, 2, 32, 32) and masks.shape == (3, 32, 32)
    for c, entry in enumerate(manifest["preprocessing"]["intensity"]["channels"]):  # round trip: level -> units
        lo, hi = entry["lo"], entry["hi"]
        expected = lo + levels[c].astype(np.float64) / 65535 * (hi - lo)
        assert np.allclose(images[0, c], expected, atol=(hi - lo) / 65535)
        assert lo - 1e-3 <= images[:, c].min() <= images[:, c].max() <= hi + 1e-3

    assert main(["evaluate", "--real", f"{prep}:train", "--synthetic", str(syn), "--out", str(tmp_path / "eval"),
                 "--features", "autoencoder", "--channels", "per_channel", "--ae-steps", "3", "--bootstrap", "5",
                 "--kid-subsets", "2", "--offline", "--no-card"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["intensity"]["per_channel"]) == set(NAMES)
    assert metrics["feature_spaces"]["autoencoder[T2]"]["channels"]["images"] == "channel 1 (T2)"

    assert run_tiny_downstream(prep, syn, 3, tmp_path) == {"real-rall-noaug", "synthetic-toy-n3-noaug"}

    assert main(["export", "nnunet", "--manifest", str(prep), "--synthetic", str(syn), "-n", "3",
                 "--out", str(tmp_path / "export")]) == 0
    [exported] = (tmp_path / "export").iterdir()
    assert json.loads((exported / "dataset.json").read_text())["channel_names"] == {"0": "T1", "1": "T2"}
    assert {p.name[-9:] for p in (exported / "imagesTr").glob("*.png")} == {"_0000.png", "_0001.png"}

    assert main(["vtt", "create", "--real", f"{prep}:train", "--synthetic", str(syn), "--out", str(tmp_path / "vtt"),
                 "--n", "4", "--channel", "1"]) == 0
    capsys.readouterr()


def test_8bit_channels_keep_the_8bit_window_and_channel_counts_must_agree(tmp_path, capsys):
    raw = write_toy_channels_2d(tmp_path / "raw", "nnunet", n=6, bits=8)
    pre = _prepare(raw, tmp_path / "prep")["preprocessing"]
    assert pre["bit_depth"] == 8
    assert [(c["lo"], c["hi"], c["from"]) for c in pre["intensity"]["channels"]] == [(0.0, 255.0, "8-bit range")] * 2
    (raw / "imagesTr" / "c03_0001.png").unlink()  # c03 now has one channel file
    code = main(["prepare", str(raw), "--out", str(tmp_path / "prep2"), "--folds", "0"])
    assert code == 2 and not (tmp_path / "prep2").exists()
    assert "c03_0000.png: 1 channel file(s), other cases 2 (every case needs the same channels)" in capsys.readouterr().err
