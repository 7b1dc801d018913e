"""The rater app through FastAPI's TestClient: login, progress, blinding, and every refusal with its status code."""

from __future__ import annotations

import http.client
import sqlite3
from datetime import datetime
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from synthmed.vtt.app import allowed_hosts_for, create_app, host_name
from synthmed.vtt.invite import invite
from synthmed.vtt.study import DB_FILE, StudyOptions, create_study, load_study

from .conftest import STUDY_ITEMS, assert_blind_text, assert_clean_png, live_server

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def app(study):
    return create_app(study)


def _client(app) -> TestClient:
    return TestClient(app, base_url=BASE)


def _logged_in(app, token: str) -> TestClient:
    client = _client(app)
    assert client.post("/api/login", json={"token": token}).status_code == 200
    return client


def _rate_next(client: TestClient, score: int, comment: str = "") -> dict:
    item = client.get("/api/next").json()
    response = client.post("/api/ratings", json={"item_id": item["item_id"], "score": score, "comment": comment})
    assert response.status_code == 201, response.text
    return item


def test_login_sets_a_strict_httponly_session_cookie(app, study, tokens):
    client = _client(app)
    assert client.get("/api/me").status_code == 401
    response = client.post("/api/login", json={"token": tokens["alice"]})
    assert response.status_code == 200 and response.json() == {"name": "alice", "role": "rater"}
    cookie = response.headers["set-cookie"]
    study_id = load_study(study).study_id
    assert cookie.startswith(f"vtt_{study_id}=") and tokens["alice"] not in cookie
    assert {"HttpOnly", "SameSite=strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie  # plain http on loopback; set when served over https
    assert client.get("/api/me").json() == {"name": "alice", "role": "rater", "rated": 0, "total": STUDY_ITEMS}
    assert client.post("/api/logout", json={}).status_code == 200
    assert client.get("/api/me").status_code == 401


def test_a_logged_out_session_cannot_be_replayed(app, tokens):
    client = _logged_in(app, tokens["alice"])
    session = dict(client.cookies)
    client.post("/api/logout", json={})
    replay = _client(app)
    replay.cookies.update(session)
    assert replay.get("/api/next").status_code == 401


def test_progress_survives_a_reload_and_a_new_browser(app, study, tokens):
    first = _logged_in(app, tokens["alice"])
    shown = [_rate_next(first, score)["item_id"] for score in (1, 9, 4)]
    assert first.get("/api/next").json()["position"] == 4  # a reload asks the server again
    second = _logged_in(app, tokens["alice"])  # another browser: no cookies of the first
    item = second.get("/api/next").json()
    assert item["position"] == 4 and item["rated"] == 3 and item["item_id"] not in shown
    for score in range(STUDY_ITEMS - 3):
        _rate_next(second, score)
    assert second.get("/api/next").json() == {"done": True, "rated": STUDY_ITEMS, "total": STUDY_ITEMS}
    with sqlite3.connect(study / DB_FILE) as conn:
        rows = conn.execute("SELECT score, comment, created_at FROM ratings ORDER BY rating_id").fetchall()
        presented = conn.execute("SELECT COUNT(*) FROM presentations").fetchone()[0]
    assert [r[0] for r in rows] == [1, 9, 4, 0, 1, 2, 3, 4] and presented == STUDY_ITEMS
    stamps = [datetime.fromisoformat(r[2]) for r in rows]
    assert all(s.tzinfo is not None for s in stamps) and stamps == sorted(stamps)


def test_each_rater_has_their_own_order_of_the_same_items(app, tokens):
    orders = {}
    for name in ("alice", "bob"):
        client = _logged_in(app, tokens[name])
        orders[name] = [_rate_next(client, 5)["item_id"] for _ in range(STUDY_ITEMS)]
    assert sorted(orders["alice"]) == sorted(orders["bob"]) and orders["alice"] != orders["bob"]


def test_served_pages_json_and_renders_never_reveal_the_origin(app, study, tokens):
    client = _logged_in(app, tokens["alice"])
    texts = {path: client.get(path).text for path in ("/", "/static/app.js", "/static/style.css", "/api/me")}
    for _ in range(STUDY_ITEMS):
        response = client.get("/api/next")
        texts[f"next {response.json()['position']}"] = response.text
        for view in response.json()["views"]:
            for layer in ("image", "overlay"):
                assert_blind_text(view[layer], study, "render URL")
                render = client.get(view[layer])
                assert render.status_code == 200 and render.headers["content-type"] == "image/png"
                assert not {"etag", "last-modified", "content-disposition"} & set(render.headers)
                assert_clean_png(render.content, view[layer])
        rated = client.post("/api/ratings", json={"item_id": response.json()["item_id"], "score": 3})
        texts[f"rated {response.json()['position']}"] = rated.text
    texts["done"] = client.get("/api/next").text
    for where, text in texts.items():
        assert_blind_text(text, study, where)


def test_security_headers_and_no_api_docs(app):
    client = _client(app)
    response = client.get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_bad_tokens_are_refused_with_401(app, study, tokens, vtt_inputs, tmp_path):
    manifest, synthetic = vtt_inputs
    other = create_study(str(manifest), [synthetic], tmp_path / "other", StudyOptions(n=4, seed=0))
    other_token = invite(other, ["alice"])[0].token
    own_id, other_id = load_study(study).study_id, load_study(other).study_id
    forged = [
        other_token,  # a valid token of another study
        other_token.replace(other_id, own_id),  # its secret under this study's id
        tokens["alice"].replace(own_id, other_id),  # this study's secret under another id
        tokens["alice"][:-1] + ("A" if tokens["alice"][-1] != "A" else "B"),  # one character off
        "vtt_" + own_id + "_" + "x" * 43,
        "not-a-token", "",
    ]
    client = _client(app)
    for token in forged:
        assert client.post("/api/login", json={"token": token}).status_code == 401, token
        assert client.get("/api/next", headers={"Authorization": f"Bearer {token}"}).status_code == 401, token
    assert client.post("/api/login", json={"token": "x" * 201}).status_code == 422
    assert client.get("/api/next", headers={"Authorization": f"Basic {tokens['alice']}"}).status_code == 401
    client.cookies.set(f"vtt_{own_id}", "forged-session")
    assert client.get("/api/next").status_code == 401
    # and the other study's app refuses this study's token too
    assert _client(create_app(other)).post("/api/login", json={"token": tokens["alice"]}).status_code == 401
    # bearer tokens work where they are valid
    assert client.get("/api/next", headers={"Authorization": f"Bearer {tokens['alice']}"}).status_code == 200


def test_no_credentials_means_401_before_any_validation(app, study):
    client = _client(app)
    item = load_study(study).item_ids[0]
    assert client.post("/api/ratings", json={"item_id": item, "score": 99}).status_code == 401
    assert client.get(f"/api/items/{item}/axial/image.png").status_code == 401
    assert client.get("/admin/export/ratings.csv").status_code == 401


def test_roles_are_enforced_with_403(app, tokens):
    rater, admin = _logged_in(app, tokens["alice"]), _logged_in(app, tokens["boss"])
    for path in ("/admin/export/ratings.csv", "/admin/export/raters.csv", "/api/admin/progress"):
        assert rater.get(path).status_code == 403
    assert admin.get("/api/next").status_code == 403
    item = rater.get("/api/next").json()["item_id"]
    assert admin.post("/api/ratings", json={"item_id": item, "score": 3}).status_code == 403


@pytest.mark.parametrize("body", [
    {"score": -1}, {"score": 11}, {"score": 100}, {"score": 5.0}, {"score": 5.5}, {"score": "5"}, {"score": True},
    {"score": None}, {}, {"score": 5, "comment": "x" * 2001}, {"score": 5, "comment": 7}, {"score": 5, "origin": "x"},
])
def test_invalid_ratings_are_refused_with_422(app, study, tokens, body):
    client = _logged_in(app, tokens["alice"])
    item = client.get("/api/next").json()["item_id"]
    assert client.post("/api/ratings", json={"item_id": item, **body}).status_code == 422
    with sqlite3.connect(study / DB_FILE) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0


def test_boundary_scores_and_the_longest_comment_are_accepted(app, study, tokens):
    client = _logged_in(app, tokens["alice"])
    _rate_next(client, 0, "ü" * 2000)
    _rate_next(client, 10)
    with sqlite3.connect(study / DB_FILE) as conn:
        assert conn.execute("SELECT score, length(comment) FROM ratings ORDER BY rating_id").fetchall() == [(0, 2000), (10, 0)]


def test_oversized_and_non_json_bodies_are_refused(app, tokens):
    client = _logged_in(app, tokens["alice"])
    item = client.get("/api/next").json()["item_id"]
    huge = '{"item_id": "%s", "score": 5, "comment": "%s"}' % (item, "x" * 70_000)
    response = client.post("/api/ratings", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413

    def chunks():  # no Content-Length: the size is counted while reading
        yield huge[:1000].encode()
        yield huge[1000:].encode()
    response = client.post("/api/ratings", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    form = client.post("/api/ratings", data={"item_id": item, "score": "5"})
    assert form.status_code == 415
    plain = client.post("/api/ratings", content=b'{"item_id": "%s", "score": 5}' % item.encode(), headers={"content-type": "text/plain"})
    assert plain.status_code == 415


def test_ratings_are_final_and_in_order(app, study, tokens):
    client = _logged_in(app, tokens["alice"])
    first = _rate_next(client, 2)["item_id"]
    again = client.post("/api/ratings", json={"item_id": first, "score": 8})
    assert again.status_code == 409 and "already rated" in again.json()["detail"]
    order = [i for i in load_study(study).item_ids]
    current = client.get("/api/next").json()["item_id"]
    later = next(i for i in order if i not in (first, current))
    skip = client.post("/api/ratings", json={"item_id": later, "score": 8})
    assert skip.status_code == 409 and "not the current item" in skip.json()["detail"]
    assert client.post("/api/ratings", json={"item_id": "0" * 16, "score": 8}).status_code == 404
    assert client.post("/api/ratings", json={"item_id": "../../key.json", "score": 8}).status_code == 404
    with sqlite3.connect(study / DB_FILE) as conn:
        assert conn.execute("SELECT item_id, score FROM ratings").fetchall() == [(first, 2)]


TRAVERSALS = [
    "/key.json", "/study.json", "/vtt.sqlite3", "/renders", "/static/index.html", "/static/..%2Fkey.json",
    "/static/%2e%2e/%2e%2e/key.json", "/api/items/..%2F..%2Fkey.json/axial/image.png",
    "/api/items/%2e%2e/axial/image.png", "/api/items/{item}/axial/..%2F..%2Fkey.json.png",
    "/api/items/{item}/..%2F..%2Fstudy.json/image.png", "/api/items/{item}/axial/overlay.png%00.json",
    "/api/items/{item}/AXIAL/image.png", "/api/items/0000000000000000/axial/image.png",
    "/api/items/{item}/axial/image.png/../../../key.json",
]


def test_paths_outside_the_renders_are_never_served(app, study, tokens):
    client = _logged_in(app, tokens["alice"])
    item = load_study(study).item_ids[0]
    for path in TRAVERSALS:
        response = client.get(path.format(item=item))
        assert response.status_code == 404, path
        assert b"study_id" not in response.content and b"origin" not in response.content
    assert client.get(f"/api/items/{item}/axial/image.png").status_code == 200


def test_raw_traversal_paths_over_http_are_refused(app, study, tokens):
    item = load_study(study).item_ids[0]
    with live_server(app) as url:
        for path in ["/../key.json", "/renders/../key.json", f"/api/items/{item}/axial/../../../../key.json",
                     "/static/../../key.json", "/%2e%2e/%2e%2e/key.json"]:
            conn = http.client.HTTPConnection(urlparse(url).hostname, urlparse(url).port, timeout=10)
            conn.putrequest("GET", path, skip_host=True)  # the path is sent exactly as written
            conn.putheader("Host", "127.0.0.1")
            conn.putheader("Authorization", f"Bearer {tokens['alice']}")
            conn.endheaders()
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status == 404 and b"origin" not in body, path


def test_foreign_host_headers_are_refused(app):
    client = _client(app)
    assert client.get("/", headers={"host": "attacker.example"}).status_code == 400
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get("/", headers={"host": host}).status_code == 200, host
    assert host_name("[::1]:8000") == "::1" and host_name("Example.ORG:80") == "example.org"
    assert allowed_hosts_for("0.0.0.0") is None
    assert "vtt.example.org" in allowed_hosts_for("0.0.0.0", ["vtt.example.org"])


def test_admin_exports_join_the_key_and_defuse_formulas(app, study, tokens):
    rater = _logged_in(app, tokens["alice"])
    item = _rate_next(rater, 7, "=HYPERLINK(\"http://x\")")["item_id"]
    admin = _client(app)
    response = admin.get("/admin/export/ratings.csv", headers={"Authorization": f"Bearer {tokens['boss']}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    header, row = response.text.splitlines()
    assert header == "rater,position,item_id,origin,set,case,score,comment,first_shown_at,rated_at,seconds"
    fields = row.split(",")
    key_entry = __import__("json").loads((study / "key.json").read_text())["items"][item]
    assert fields[:7] == ["alice", "1", item, key_entry["origin"], key_entry["set"], key_entry["case"], "7"]
    assert fields[7].startswith("\"'=HYPERLINK")  # a quote keeps spreadsheets from running it
    raters = admin.get("/admin/export/raters.csv", headers={"Authorization": f"Bearer {tokens['boss']}"}).text
    assert raters.splitlines()[1:] == [f"alice,rater,1,{STUDY_ITEMS},{fields[9]},{fields[9]}", f"bob,rater,0,{STUDY_ITEMS},,"]
    progress = admin.get("/api/admin/progress", headers={"Authorization": f"Bearer {tokens['boss']}"}).json()
    assert [(p["rater"], p["rated"]) for p in progress["people"]] == [("alice", 1), ("bob", 0)]


def test_reissued_tokens_replace_the_old_ones_and_keep_ratings(app, study, tokens):
    client = _logged_in(app, tokens["alice"])
    _rate_next(client, 6)
    new = invite(study, ["alice"], reissue=True)[0].token
    assert client.get("/api/next").status_code == 401  # sessions of the old token are closed
    assert _client(app).post("/api/login", json={"token": tokens["alice"]}).status_code == 401
    assert _logged_in(app, new).get("/api/next").json()["position"] == 2


def test_the_database_is_in_wal_mode_and_checked_against_the_study(study, tokens, tmp_path, base_study):
    from synthmed.vtt import db

    with sqlite3.connect(study / DB_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with db.opened(study / DB_FILE) as conn:  # the schema refuses what the API refuses, as a second line
        item = db.next_item(conn, 1).item_id
        for score, comment in ((11, ""), (-1, ""), (5.5, ""), (None, ""), (5, "x" * 2001)):
            with pytest.raises(sqlite3.IntegrityError):
                db.insert_rating(conn, 1, item, score, comment)
        assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0
    import shutil

    from synthmed.errors import UserError

    mixed = shutil.copytree(base_study, tmp_path / "mixed")
    with sqlite3.connect(mixed / DB_FILE) as conn:
        conn.execute("UPDATE meta SET value = 'aaaaaaaaaaaa' WHERE key = 'study_id'")
    with pytest.raises(UserError, match="belongs to study 'aaaaaaaaaaaa'"):
        create_app(mixed)
