"""The `synthmed vtt` sub-commands through their parser: create, invite, analyze, serve's checks, and clean errors."""

from __future__ import annotations

import argparse
import json
import socket

import pytest

from synthmed.errors import UserError
from synthmed.vtt import db
from synthmed.vtt.cli import add_vtt_parser
from synthmed.vtt.invite import invite
from synthmed.vtt.study import STUDY_FILE, load_key, load_study


def _run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="synthmed")
    add_vtt_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0


def test_create_invite_rate_analyze(vtt_inputs, tmp_path, capsys):
    manifest, synthetic = vtt_inputs
    study = tmp_path / "study"
    _run(["vtt", "create", "--real", f"{manifest}:train", "--synthetic", str(synthetic), "--n", "6", "--seed", "2",
          "--out", str(study), "--window", "-1000", "600", "--panel-size", "96", "--interpolation", "nearest", "--shared-order"])
    assert "created study" in capsys.readouterr().out
    doc = json.loads((study / STUDY_FILE).read_text())
    assert doc["rater_order"] == "shared" and doc["render"]["view_sizes"]["axial"] == [96, 96]

    _run(["vtt", "invite", "--study", str(study), "MD1", "MD2", "--admin", "lead"])
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [(role, name) for role, name, _ in lines] == [("rater", "MD1"), ("rater", "MD2"), ("admin", "lead")]
    assert all(token.startswith(f"vtt_{doc['study_id']}_") for _, _, token in lines)

    key = load_key(load_study(study))
    with db.opened(study / "vtt.sqlite3") as conn:
        for rater_id in (1, 2):
            while (item := db.next_item(conn, rater_id)) is not None:
                db.insert_rating(conn, rater_id, item.item_id, 8 if key[item.item_id]["origin"] == "synthetic" else 2, "")
    _run(["vtt", "analyze", "--study", str(study)])
    out = capsys.readouterr().out
    assert "| MD1 | 6 | 2.000 | 8.000 | 1.000 | 1.000 | 0 |" in out and "interval 1.000" in out
    assert (study / "analysis" / "roc.png").is_file()


def test_invite_errors_name_the_problem(base_study, tmp_path):
    import shutil

    study = shutil.copytree(base_study, tmp_path / "s")
    with pytest.raises(UserError, match="at least one rater"):
        invite(study, [])
    invite(study, ["MD1"])
    with pytest.raises(UserError, match="'MD1': already invited"):
        invite(study, ["MD1"])
    with pytest.raises(UserError, match="not invited yet"):
        invite(study, ["MD9"], reissue=True)
    with pytest.raises(UserError, match="names are 1-64 letters"):
        invite(study, ["<script>"])
    with pytest.raises(UserError, match="given twice"):
        invite(study, ["MD2", "MD2"])
    with pytest.raises(UserError, match="study.json not found"):
        invite(tmp_path, ["MD3"])


def test_serve_refuses_bad_ports_before_starting(base_study):
    from synthmed.vtt.app import is_loopback, serve

    with pytest.raises(UserError, match="--port 0"):
        serve(base_study, port=0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
            serve(base_study, port=busy.getsockname()[1])
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
