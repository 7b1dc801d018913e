"""Load: 20 concurrent raters post over HTTP to a real uvicorn server on loopback; nothing lost, nothing duplicated."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from synthmed.vtt.app import create_app
from synthmed.vtt.invite import invite
from synthmed.vtt.study import DB_FILE

from .conftest import STUDY_ITEMS, live_server

N_RATERS = 20
MAX_STEPS = 3 * STUDY_ITEMS  # the loop is bounded: a rater who never finishes fails the test instead of hanging


def _score(rater: str, position: int) -> int:
    return (int(rater[1:]) * 7 + position * 3) % 11


def _rate_everything(base_url: str, name: str, token: str, start: threading.Barrier) -> dict:
    """Log in, then rate until done; on every third item post the same rating twice at once."""
    acknowledged, statuses = {}, []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        assert client.post("/api/login", json={"token": token}).status_code == 200
        start.wait(timeout=60)
        for _ in range(MAX_STEPS):
            item = client.get("/api/next").json()
            if item["done"]:
                break
            body = {"item_id": item["item_id"], "score": _score(name, item["position"]), "comment": f"{name}/{item['position']}"}
            copies = 2 if item["position"] % 3 == 0 else 1
            with ThreadPoolExecutor(copies) as pool:
                codes = sorted(r.status_code for r in pool.map(lambda _: client.post("/api/ratings", json=body), range(copies)))
            statuses.append(codes)
            assert codes[0] == 201 and codes[1:] in ([], [409]), codes
            acknowledged[item["item_id"]] = body["score"]
        else:
            raise AssertionError(f"{name} did not finish within {MAX_STEPS} steps")
    return {"acknowledged": acknowledged, "duplicates_refused": sum(len(c) - 1 for c in statuses)}


def test_twenty_concurrent_raters_lose_and_duplicate_nothing(study):
    invitations = invite(study, [f"r{i:02d}" for i in range(N_RATERS)])
    start = threading.Barrier(N_RATERS)
    with live_server(create_app(study)) as url, ThreadPoolExecutor(N_RATERS) as pool:
        futures = {inv.name: pool.submit(_rate_everything, url, inv.name, inv.token, start) for inv in invitations}
        results = {name: f.result(timeout=300) for name, f in futures.items()}
    with sqlite3.connect(study / DB_FILE) as conn:
        rows = conn.execute("SELECT r.name, g.item_id, g.score, g.comment FROM ratings g JOIN raters r USING (rater_id)").fetchall()
    assert len(rows) == N_RATERS * STUDY_ITEMS
    assert len({(name, item) for name, item, _, _ in rows}) == len(rows)  # no duplicate
    stored = {(name, item): score for name, item, score, _ in rows}
    expected = {(name, item): score for name, r in results.items() for item, score in r["acknowledged"].items()}
    assert stored == expected  # every acknowledged rating stored as sent, nothing else
    assert sum(r["duplicates_refused"] for r in results.values()) == N_RATERS * (STUDY_ITEMS // 3)
