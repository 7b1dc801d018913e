"""The study database (SQLite in WAL mode): items, raters, their item order, sessions and ratings.

Origins are not stored here; they live only in ``key.json``. Tokens and session ids are stored as
SHA-256 hashes. One rating per (rater, item) is enforced by a UNIQUE constraint, and ratings are
written inside ``BEGIN IMMEDIATE`` transactions, so concurrent posts can neither lose nor duplicate
a rating. Every timestamp is UTC ISO 8601 with milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from synthmed.errors import UserError

SCHEMA_VERSION = "1"
ROLES = ("rater", "admin")
MAX_COMMENT_CHARS = 2000
MIN_SCORE, MAX_SCORE = 0, 10
BUSY_TIMEOUT_S = 30.0

SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (item_id TEXT PRIMARY KEY, study_position INTEGER NOT NULL UNIQUE);
CREATE TABLE raters (
    rater_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('rater', 'admin')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE rater_items (
    rater_id INTEGER NOT NULL REFERENCES raters(rater_id),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id),
    PRIMARY KEY (rater_id, position),
    UNIQUE (rater_id, item_id)
);
CREATE TABLE sessions (
    session_sha256 TEXT PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters(rater_id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE presentations (
    rater_id INTEGER NOT NULL REFERENCES raters(rater_id),
    item_id TEXT NOT NULL REFERENCES items(item_id),
    first_shown_at TEXT NOT NULL,
    PRIMARY KEY (rater_id, item_id)
);
CREATE TABLE ratings (
    rating_id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters(rater_id),
    item_id TEXT NOT NULL REFERENCES items(item_id),
    score INTEGER NOT NULL CHECK (typeof(score) = 'integer' AND score BETWEEN {MIN_SCORE} AND {MAX_SCORE}),
    comment TEXT NOT NULL DEFAULT '' CHECK (length(comment) <= {MAX_COMMENT_CHARS}),
    created_at TEXT NOT NULL,
    UNIQUE (rater_id, item_id),
    FOREIGN KEY (rater_id, item_id) REFERENCES rater_items(rater_id, item_id)
);
"""


@dataclass(frozen=True)
class Principal:
    """Who a request comes from."""

    rater_id: int
    name: str
    role: str  # "rater" or "admin"


@dataclass(frozen=True)
class NextItem:
    """The next unrated item of a rater."""

    position: int  # 1-based, in the rater's order
    item_id: str


class RatingConflict(Exception):
    """The item was already rated by this rater, or is not the rater's current item."""


def utc_now() -> str:
    """Current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """Open the database: WAL journal, foreign keys on, a busy timeout, explicit transactions.

    Raises:
        UserError: the file does not exist (run `synthmed vtt create` first).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: study database not found (create the study with `synthmed vtt create`)")
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")  # a rating acknowledged to the rater survives a power cut
    return conn


@contextlib.contextmanager
def opened(path: str | os.PathLike) -> Iterator[sqlite3.Connection]:
    """`connect` as a context manager that always closes the connection."""
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): writers run one at a time."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_database(path: str | os.PathLike, study_id: str, item_ids: list[str]) -> None:
    """Create a new database for a study with `item_ids` (in study order), in WAL mode."""
    path = Path(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        assert mode == "wal", f"SQLite refused WAL mode ({mode})"
        conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
        with transaction(conn):
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                             [("schema_version", SCHEMA_VERSION), ("study_id", study_id), ("created_at", utc_now())])
            conn.executemany("INSERT INTO items (item_id, study_position) VALUES (?, ?)",
                             [(item, i + 1) for i, item in enumerate(item_ids)])
    finally:
        conn.close()
    os.chmod(path, 0o600)


def check_database(conn: sqlite3.Connection, path: Path, study_id: str) -> None:
    """Refuse a database of another study or schema.

    Raises:
        UserError: naming the file and what differs.
    """
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path}: database schema {meta.get('schema_version')!r}, this synthmed reads {SCHEMA_VERSION!r}")
    if meta.get("study_id") != study_id:
        raise UserError(f"{path}: database belongs to study {meta.get('study_id')!r}, not {study_id!r} (study.json)")


def add_principal(conn: sqlite3.Connection, name: str, role: str, token_sha256: str, order: list[str]) -> None:
    """Add a rater (with their item order) or an admin (no items)."""
    with transaction(conn):
        cur = conn.execute("INSERT INTO raters (name, role, token_sha256, created_at) VALUES (?, ?, ?, ?)",
                           (name, role, token_sha256, utc_now()))
        conn.executemany("INSERT INTO rater_items (rater_id, position, item_id) VALUES (?, ?, ?)",
                         [(cur.lastrowid, i + 1, item) for i, item in enumerate(order)])


def replace_token(conn: sqlite3.Connection, name: str, token_sha256: str) -> None:
    """Give `name` a new token; the old token and every open session of `name` stop working."""
    with transaction(conn):
        row = conn.execute("SELECT rater_id FROM raters WHERE name = ?", (name,)).fetchone()
        conn.execute("UPDATE raters SET token_sha256 = ? WHERE rater_id = ?", (token_sha256, row[0]))
        conn.execute("DELETE FROM sessions WHERE rater_id = ?", (row[0],))


def principal_names(conn: sqlite3.Connection) -> dict[str, str]:
    """name -> role of everyone invited."""
    return dict(conn.execute("SELECT name, role FROM raters").fetchall())


def principal_by_token_hash(conn: sqlite3.Connection, token_sha256: str) -> Principal | None:
    row = conn.execute("SELECT rater_id, name, role FROM raters WHERE token_sha256 = ?", (token_sha256,)).fetchone()
    return Principal(*row) if row else None


def create_session(conn: sqlite3.Connection, session_sha256: str, rater_id: int, lifetime: timedelta) -> None:
    now = datetime.now(timezone.utc)
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE expires_at < ?", (now.isoformat(timespec="milliseconds"),))
        conn.execute("INSERT INTO sessions (session_sha256, rater_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                     (session_sha256, rater_id, now.isoformat(timespec="milliseconds"),
                      (now + lifetime).isoformat(timespec="milliseconds")))


def principal_by_session_hash(conn: sqlite3.Connection, session_sha256: str) -> Principal | None:
    row = conn.execute(
        "SELECT r.rater_id, r.name, r.role FROM sessions s JOIN raters r ON r.rater_id = s.rater_id "
        "WHERE s.session_sha256 = ? AND s.expires_at > ?", (session_sha256, utc_now())).fetchone()
    return Principal(*row) if row else None


def delete_session(conn: sqlite3.Connection, session_sha256: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE session_sha256 = ?", (session_sha256,))


def next_item(conn: sqlite3.Connection, rater_id: int) -> NextItem | None:
    """The first item in the rater's order that they have not rated; None when all are rated."""
    row = conn.execute(
        "SELECT ri.position, ri.item_id FROM rater_items ri "
        "LEFT JOIN ratings r ON r.rater_id = ri.rater_id AND r.item_id = ri.item_id "
        "WHERE ri.rater_id = ? AND r.rating_id IS NULL ORDER BY ri.position LIMIT 1", (rater_id,)).fetchone()
    return NextItem(*row) if row else None


def progress(conn: sqlite3.Connection, rater_id: int) -> tuple[int, int]:
    """(items rated, items assigned) of a rater."""
    rated = conn.execute("SELECT COUNT(*) FROM ratings WHERE rater_id = ?", (rater_id,)).fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM rater_items WHERE rater_id = ?", (rater_id,)).fetchone()[0]
    return rated, total


def is_assigned(conn: sqlite3.Connection, rater_id: int, item_id: str) -> bool:
    return conn.execute("SELECT 1 FROM rater_items WHERE rater_id = ? AND item_id = ?", (rater_id, item_id)).fetchone() is not None


def record_presentation(conn: sqlite3.Connection, rater_id: int, item_id: str) -> None:
    """Remember when an item was first shown to a rater (later showings keep the first time)."""
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO presentations (rater_id, item_id, first_shown_at) VALUES (?, ?, ?)",
                     (rater_id, item_id, utc_now()))


def insert_rating(conn: sqlite3.Connection, rater_id: int, item_id: str, score: int, comment: str) -> int:
    """Store the rating of the rater's current item; return its position.

    Raises:
        RatingConflict: the item is already rated by this rater, or it is not their current item
            (items are rated in the rater's order, one at a time).
    """
    with transaction(conn):
        if conn.execute("SELECT 1 FROM ratings WHERE rater_id = ? AND item_id = ?", (rater_id, item_id)).fetchone():
            raise RatingConflict("this item is already rated; ratings are final")
        current = next_item(conn, rater_id)
        if current is None or current.item_id != item_id:
            raise RatingConflict("this is not the current item; reload the page")
        conn.execute("INSERT INTO ratings (rater_id, item_id, score, comment, created_at) VALUES (?, ?, ?, ?, ?)",
                     (rater_id, item_id, score, comment, utc_now()))
    return current.position


RATING_COLUMNS = ("rater", "role", "position", "item_id", "score", "comment", "first_shown_at", "rated_at")


def all_ratings(conn: sqlite3.Connection) -> list[dict]:
    """Every rating with its rater name and position, ordered by rater then position."""
    rows = conn.execute(
        "SELECT r.name, r.role, ri.position, g.item_id, g.score, g.comment, p.first_shown_at, g.created_at "
        "FROM ratings g JOIN raters r ON r.rater_id = g.rater_id "
        "JOIN rater_items ri ON ri.rater_id = g.rater_id AND ri.item_id = g.item_id "
        "LEFT JOIN presentations p ON p.rater_id = g.rater_id AND p.item_id = g.item_id "
        "ORDER BY r.name, ri.position").fetchall()
    return [dict(zip(RATING_COLUMNS, row)) for row in rows]


PROGRESS_COLUMNS = ("rater", "role", "rated", "assigned", "first_rating_at", "last_rating_at")


def all_progress(conn: sqlite3.Connection) -> list[dict]:
    """Per invited person: items rated and assigned, first and last rating time."""
    rows = conn.execute(
        "SELECT r.name, r.role, "
        "(SELECT COUNT(*) FROM ratings g WHERE g.rater_id = r.rater_id), "
        "(SELECT COUNT(*) FROM rater_items ri WHERE ri.rater_id = r.rater_id), "
        "(SELECT MIN(created_at) FROM ratings g WHERE g.rater_id = r.rater_id), "
        "(SELECT MAX(created_at) FROM ratings g WHERE g.rater_id = r.rater_id) "
        "FROM raters r ORDER BY r.role DESC, r.name").fetchall()
    return [dict(zip(PROGRESS_COLUMNS, row)) for row in rows]
