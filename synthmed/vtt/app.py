"""The rater web app of a study (FastAPI), and `serve` to run it with uvicorn.

Security model:
- Binding: loopback (127.0.0.1) by default. Requests whose Host header names another host are
  refused (400), which also stops DNS-rebinding pages from talking to a loopback server.
- Login: ``POST /api/login`` with a token from `synthmed vtt invite` opens a session; the browser
  keeps only a random session id in an HttpOnly, SameSite=Strict cookie named after the study (Secure
  over https). Scripts may instead send ``Authorization: Bearer <token>``. A token is accepted only
  when it names this study and its SHA-256 is in this study's database.
- Blinding: nothing served names an item's origin. Items are known by random ids; renders are
  looked up in study.json by (item id, view, layer), never by a path taken from the request, and
  are sent without file names, ETag or Last-Modified. key.json is read only for admin CSV exports.
- Input: JSON only (415 otherwise), bodies up to 64 KiB (413), scores are integers 0..10 and comments
  at most 2000 characters (422), one final rating per rater and item, in the rater's order (409).
- Status codes: 401 no or bad credentials, 403 wrong role, 404 anything not found.
- Headers: a strict Content-Security-Policy (no inline script, same-origin only), nosniff,
  no-referrer, frame-ancestors none, Cache-Control no-store.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.datastructures import Headers

from synthmed.errors import UserError
from synthmed.vtt import db
from synthmed.vtt.study import ITEM_ID_PATTERN, Study, load_key, load_study
from synthmed.vtt.tokens import MAX_TOKEN_CHARS, new_session_id, sha256_hex, token_is_for_study

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SESSION_LIFETIME = timedelta(days=30)
MAX_BODY_BYTES = 64 * 1024
MAX_SESSION_CHARS = 100
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=MAX_TOKEN_CHARS)


class RatingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(max_length=64)
    score: StrictInt = Field(ge=db.MIN_SCORE, le=db.MAX_SCORE)  # 0 = certainly real ... 10 = certainly synthetic
    comment: str = Field(default="", max_length=db.MAX_COMMENT_CHARS)


def host_name(host_header: str) -> str:
    """The host part of a Host header, lower case: ``[::1]:8000`` -> ``::1``, ``Example:80`` -> ``example``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class GuardMiddleware:
    """Host check, JSON-only bodies of bounded size, and security headers on every response (pure ASGI)."""

    def __init__(self, app, allowed_hosts: frozenset[str] | None):
        self.app = app
        self.allowed_hosts = allowed_hosts  # None: any host

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in SECURITY_HEADERS if h[0] not in names]
            await send(message)

        headers = Headers(scope=scope)
        if self.allowed_hosts is not None and host_name(headers.get("host", "")) not in self.allowed_hosts:
            return await PlainTextResponse("invalid Host header", 400)(scope, receive, send_with_headers)
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            refusal = await self._check_body(scope, headers, receive)
            if isinstance(refusal, Response):
                return await refusal(scope, receive, send_with_headers)
            receive = refusal
        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _check_body(scope, headers: Headers, receive):
        """A refusal response, or a `receive` that replays the (small) body already read."""
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return JSONResponse({"detail": "send JSON (Content-Type: application/json)"}, 415)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return replay


def _static_bytes(name: str) -> bytes:
    return resources.files("synthmed.vtt").joinpath("static", name).read_bytes()


def _csv_cell(value) -> object:
    """Neutralise spreadsheet formulas in text cells (CSV injection): prefix them with a quote."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


def _csv_response(rows: list[dict], columns: list[str], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def rating_rows_with_key(study: Study, conn) -> list[dict]:
    """Every rater's ratings joined with the answer key (origin, set, case) and the seconds taken."""
    key = load_key(study)
    rows = []
    for row in db.all_ratings(conn):
        entry = key[row["item_id"]]
        rows.append({**row, "origin": entry["origin"], "set": entry["set"], "case": entry["case"],
                     "seconds": _seconds_between(row["first_shown_at"], row["rated_at"])})
    return rows


EXPORT_COLUMNS = ["rater", "position", "item_id", "origin", "set", "case", "score", "comment", "first_shown_at",
                  "rated_at", "seconds"]


def create_app(study_dir: str | os.PathLike, allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS) -> FastAPI:
    """The web app of the study in `study_dir`.

    Args:
        study_dir: a study folder written by `synthmed vtt create`.
        allowed_hosts: host names the Host header may carry (None: any; see `allowed_hosts_for`).

    Raises:
        UserError: not a study folder, or a database of another study.
    """
    study = load_study(study_dir)
    with db.opened(study.db_path) as conn:
        db.check_database(conn, study.db_path, study.study_id)
    cookie_name = f"vtt_{study.study_id}"  # one cookie per study: two studies on one host do not clash
    index_html = _static_bytes("index.html")
    views = [{"name": v, "height": study.view_sizes[v][0], "width": study.view_sizes[v][1]} for v in study.views]

    app = FastAPI(title="synthmed vtt", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GuardMiddleware, allowed_hosts=None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts))

    def principal(request: Request, conn) -> db.Principal | None:
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token_is_for_study(token, study.study_id):
                return None
            return db.principal_by_token_hash(conn, sha256_hex(token))
        session = request.cookies.get(cookie_name)
        if not session or len(session) > MAX_SESSION_CHARS:
            return None
        return db.principal_by_session_hash(conn, sha256_hex(session))

    def require(request: Request, role: str) -> db.Principal:
        with db.opened(study.db_path) as conn:
            who = principal(request, conn)
        if who is None:
            raise HTTPException(401, "not logged in, or the token or session is not valid for this study",
                                headers={"WWW-Authenticate": "Bearer"})
        if who.role != role:
            raise HTTPException(403, f"this needs a {role} token")
        return who

    # dependencies run before the body is validated: a request without credentials gets 401, not 422
    def rater(request: Request) -> db.Principal:
        return require(request, "rater")

    def admin(request: Request) -> db.Principal:
        return require(request, "admin")

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(index_html, media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return Response(_static_bytes(name), media_type=STATIC_FILES[name])

    @app.post("/api/login")
    def login(body: LoginBody, request: Request, response: Response) -> dict:
        with db.opened(study.db_path) as conn:
            who = None
            if token_is_for_study(body.token, study.study_id):
                who = db.principal_by_token_hash(conn, sha256_hex(body.token))
            if who is None:
                raise HTTPException(401, "this token is not valid for this study")
            session = new_session_id()
            db.create_session(conn, sha256_hex(session), who.rater_id, SESSION_LIFETIME)
        response.set_cookie(cookie_name, session, max_age=int(SESSION_LIFETIME.total_seconds()), path="/",
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return {"name": who.name, "role": who.role}

    @app.post("/api/logout")
    def logout(request: Request, response: Response) -> dict:
        session = request.cookies.get(cookie_name)
        if session and len(session) <= MAX_SESSION_CHARS:
            with db.opened(study.db_path) as conn:
                db.delete_session(conn, sha256_hex(session))
        response.delete_cookie(cookie_name, path="/", httponly=True, samesite="strict")
        return {}

    @app.get("/api/me")
    def me(request: Request) -> dict:
        with db.opened(study.db_path) as conn:
            who = principal(request, conn)
            if who is None:
                raise HTTPException(401, "not logged in", headers={"WWW-Authenticate": "Bearer"})
            rated, total = db.progress(conn, who.rater_id)
        return {"name": who.name, "role": who.role, "rated": rated, "total": total}

    @app.get("/api/next")
    def next_item(who: db.Principal = Depends(rater)) -> dict:
        with db.opened(study.db_path) as conn:
            rated, total = db.progress(conn, who.rater_id)
            item = db.next_item(conn, who.rater_id)
            if item is None:
                return {"done": True, "rated": rated, "total": total}
            db.record_presentation(conn, who.rater_id, item.item_id)
        base = f"/api/items/{item.item_id}"
        return {"done": False, "rated": rated, "total": total, "position": item.position, "item_id": item.item_id,
                "views": [{**v, "image": f"{base}/{v['name']}/image.png", "overlay": f"{base}/{v['name']}/overlay.png"}
                          for v in views]}

    @app.post("/api/ratings", status_code=201)
    def rate(body: RatingBody, who: db.Principal = Depends(rater)) -> dict:
        with db.opened(study.db_path) as conn:
            if not ITEM_ID_PATTERN.match(body.item_id) or not db.is_assigned(conn, who.rater_id, body.item_id):
                raise HTTPException(404, "no such item")
            try:
                position = db.insert_rating(conn, who.rater_id, body.item_id, body.score, body.comment)
            except db.RatingConflict as e:
                raise HTTPException(409, str(e)) from None
            rated, total = db.progress(conn, who.rater_id)
        return {"position": position, "rated": rated, "total": total}

    @app.get("/api/items/{item_id}/{view}/{layer}.png")
    def render(item_id: str, view: str, layer: str, who: db.Principal = Depends(rater)) -> Response:
        with db.opened(study.db_path) as conn:
            assigned = ITEM_ID_PATTERN.match(item_id) is not None and db.is_assigned(conn, who.rater_id, item_id)
        path = study.render_path(item_id, view, layer) if assigned else None
        if path is None:
            raise HTTPException(404, "not found")
        # bytes, not FileResponse: no ETag or Last-Modified that could order files by creation
        return Response(path.read_bytes(), media_type="image/png")

    @app.get("/api/admin/progress")
    def admin_progress(_: db.Principal = Depends(admin)) -> dict:
        with db.opened(study.db_path) as conn:
            return {"study_id": study.study_id, "n_items": len(study.item_ids),
                    "people": [p for p in db.all_progress(conn) if p["role"] == "rater"]}

    @app.get("/admin/export/ratings.csv")
    def export_ratings(_: db.Principal = Depends(admin)) -> Response:
        with db.opened(study.db_path) as conn:
            rows = [r for r in rating_rows_with_key(study, conn) if r["role"] == "rater"]
        return _csv_response(rows, EXPORT_COLUMNS, f"vtt_{study.study_id}_ratings.csv")

    @app.get("/admin/export/raters.csv")
    def export_raters(_: db.Principal = Depends(admin)) -> Response:
        with db.opened(study.db_path) as conn:
            rows = [p for p in db.all_progress(conn) if p["role"] == "rater"]
        return _csv_response(rows, list(db.PROGRESS_COLUMNS), f"vtt_{study.study_id}_raters.csv")

    return app


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """Host names accepted in the Host header: loopback names, the bound host and `extra`.

    A wildcard bind (0.0.0.0 or ::) without `extra` accepts any Host (None): clients may use any
    name of the machine.
    """
    extra = [h.lower() for h in extra]
    if host in ("0.0.0.0", "::") and not extra:
        return None
    names = set(LOOPBACK_HOSTS) | set(extra)
    if host not in ("0.0.0.0", "::"):
        names.add(host.lower())
    return frozenset(names)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def serve(study_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, extra_hosts: Iterable[str] = ()) -> None:
    """`synthmed vtt serve`: run the app with uvicorn until interrupted.

    Raises:
        UserError: not a study, a port outside 1..65535, or an address that cannot be bound.
    """
    import uvicorn

    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: must be within 1..65535")
    app = create_app(study_dir, allowed_hosts_for(host, extra_hosts))
    _check_port_free(host, port)
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from the network and without TLS. Put an HTTPS reverse "
              "proxy in front of it (tokens and ratings travel in the clear otherwise).", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving study {load_study(study_dir).study_id} at http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False,
                proxy_headers=True, forwarded_allow_ips="127.0.0.1")
