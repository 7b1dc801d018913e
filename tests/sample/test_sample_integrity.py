"""What ``synthmed sample`` says about the set and its checkpoint: the whole training history in the card,
empty masks counted, clear errors for a missing CUDA device and unreadable checkpoints."""

import json
import logging
import pickle

import numpy as np
import pytest
import torch

from synthmed.cli import main
from synthmed.data.manifest import load_manifest
from synthmed.downstream.data import check_leakage
from synthmed.errors import UserError
from synthmed.sample.sampler import empty_mask_warning, sample_to_folder
from synthmed.sample.synthetic_set import load_masks
from synthmed.train.checkpoint import list_checkpoints
from synthmed.train.config import resolve_config
from synthmed.train.loop import train
from tests.train.test_training import tiny_config


@pytest.fixture
def run8(toy_prepared, tmp_path):
    """A dcgan3d run of 8 steps with checkpoints at steps 4 and 8."""
    return train(resolve_config(tiny_config(toy_prepared, tmp_path / "run", steps=8)))


def sample_error(argv: list[str], capsys) -> str:
    assert main(["sample", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_card_lists_every_case_of_the_run_history_and_the_guard_sees_them(run8, toy_prepared, tmp_path):
    manifest = load_manifest(toy_prepared)
    leaked = manifest.split_ids("test")[0]
    path = list_checkpoints(run8)[-1]
    state = torch.load(path, weights_only=True)
    other = {"path": "/elsewhere/manifest.json", "sha256": "cd" * 32}
    state["history"].append({**state["history"][0], "event": "resume", "step": 8, "manifest": other,
                             "trained_on": [leaked, "case_only_in_other"]})
    torch.save(state, path)

    out = sample_to_folder(run8, 2, tmp_path / "syn")
    card = json.loads((out / "card.json").read_text())
    assert card["trained_on_case_ids"] == sorted({*manifest.split_ids("train"), leaked, "case_only_in_other"})
    assert card["extra"]["trained_on_manifests"] == [{"path": str(manifest.path), "sha256": manifest.sha256}, other]
    with pytest.raises(UserError, match="leakage guard refuses"):
        check_leakage(manifest, {"syn": str(out)})


def test_cuda_requested_without_a_cuda_device(run8, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    err = sample_error(["--checkpoint", str(run8), "-n", "1", "--out", str(tmp_path / "syn"), "--device", "cuda"], capsys)
    assert err == "synthmed sample: error: --device cuda: no CUDA device is available (use --device cpu)"
    assert not (tmp_path / "syn").exists()


@pytest.mark.parametrize("content,reason", [
    (b"hello world" * 10, "not a readable synthmed checkpoint (not a torch checkpoint file)"),
    (pickle.dumps(object), "not a synthmed checkpoint (it holds Python objects that a safe load refuses"),
])
def test_a_foreign_checkpoint_file_gets_a_short_message_without_unsafe_advice(tmp_path, capsys, content, reason):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    err = sample_error(["--checkpoint", str(bad), "-n", "1", "--out", str(tmp_path / "syn")], capsys)
    assert err.startswith(f"synthmed sample: error: {bad}: {reason}"), err
    assert "weights_only" not in err


def test_an_unreadable_newest_checkpoint_names_the_older_one_without_falling_back(run8, tmp_path, capsys):
    older, newest = list_checkpoints(run8)
    newest.write_bytes(newest.read_bytes()[:1000])
    err = sample_error(["--checkpoint", str(run8), "-n", "1", "--out", str(tmp_path / "syn")], capsys)
    assert f"{newest}: not a readable synthmed checkpoint (truncated or corrupted" in err
    assert f"the previous checkpoint {older} (step 4) is readable: pass that file instead of the run folder " \
           f"(e.g. --checkpoint {older}), or delete the unreadable {newest}" in err
    assert not (tmp_path / "syn").exists() and newest.exists()

    assert main(["sample", "--checkpoint", str(older), "-n", "1", "--out", str(tmp_path / "syn")]) == 0
    assert json.loads((tmp_path / "syn" / "card.json").read_text())["checkpoint"]["path"] == str(older)


def test_empty_masks_are_counted_in_a_warning_and_the_card(run8, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert main(["sample", "--checkpoint", str(run8), "-n", "3", "--out", str(tmp_path / "syn"),
                     "--min-component-size", "100000"]) == 0  # larger than a 16³ volume: every component goes
    expected = "3 of 3 masks are empty (background only); a segmentation model learns nothing about the structure from those pairs"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [expected]
    assert json.loads((tmp_path / "syn" / "card.json").read_text())["warnings"] == [expected]
    masks, _ = load_masks(tmp_path / "syn", (16, 16, 16), 3)
    assert masks.shape[0] == 3 and not masks.any()


def test_empty_mask_count_on_a_known_batch():
    masks = np.zeros((5, 4, 4), dtype=np.int64)
    masks[1, 0, 0] = 1
    masks[3, 2, 2] = 2
    masks[4] = 1
    assert empty_mask_warning(masks).startswith("2 of 5 masks are empty")
    assert empty_mask_warning(masks[[1, 3, 4]]) is None
