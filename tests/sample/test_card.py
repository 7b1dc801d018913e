import datetime as dt
import hashlib
import json

import pytest

import synthmed
from synthmed.errors import UserError
from synthmed.sample.card import build_card, load_card


def _card(tmp_path, **kw):
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"weights" * 100)
    args = dict(
        model="dcgan3d", checkpoint_path=ckpt, manifest_sha256="ab" * 32, trained_on=["c3", "c1", "c2"],
        seed=7, count=10, config={"n": 10},
    )
    args.update(kw)
    return build_card(**args), ckpt


def test_card_keys_and_hash(tmp_path):
    card, ckpt = _card(tmp_path, extra={"note": "x"})
    assert set(card) == {
        "format", "format_version", "model", "checkpoint", "manifest", "trained_on_case_ids", "seed", "seeds", "count",
        "synthmed_version", "created", "config", "metrics", "privacy_check", "warnings", "extra",
    }
    assert card["format"] == "synthmed-card" and card["format_version"] == 1
    assert card["checkpoint"] == {"path": str(ckpt), "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    assert card["manifest"] == {"sha256": "ab" * 32}
    assert card["trained_on_case_ids"] == ["c1", "c2", "c3"]
    assert card["synthmed_version"] == synthmed.__version__
    assert dt.datetime.fromisoformat(card["created"]).utcoffset() == dt.timedelta(0)
    assert card["metrics"] == {} and card["privacy_check"] is None and card["extra"] == {"note": "x"}
    json.dumps(card)  # serialisable as is


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="missing.pt"):
        _card(tmp_path, checkpoint_path=tmp_path / "missing.pt")


def test_load_card_round_trip_and_errors(tmp_path):
    card, _ = _card(tmp_path)
    path = tmp_path / "set" / "card.json"
    path.parent.mkdir()
    path.write_text(json.dumps(card))
    assert load_card(path) == card
    assert load_card(path.parent) == card  # a set folder works too
    with pytest.raises(UserError, match="nope.json.*not found"):
        load_card(tmp_path / "nope.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="other.json.*not a synthmed dataset card"):
        load_card(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="broken.json.*JSON"):
        load_card(broken)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(UserError, match="future.json.*format_version"):
        load_card(future)
