"""Unit locks and finished-unit records shared by every worker of one study folder.

A worker holds an exclusive ``flock`` lock on ``locks/<unit>.lock`` while it runs the unit; the file
names the owner (pid, host, start time) for whoever looks. The kernel (or the NFS lock manager)
drops the lock when its process dies, so a killed worker's unit is free for the next worker: no
stale lock outlives its owner. A unit counts as finished only once ``units/<unit>.json`` exists; it
is written atomically after the unit's outputs.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthmed.errors import UserError
from synthmed.fileio import atomic_write_json


class UnitLock:
    """An exclusive, non-blocking lock on one unit (`acquire` returns False when another worker has it)."""

    def __init__(self, study: Path, unit_id: str):
        self.path = study / "locks" / f"{unit_id}.lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free.

        Raises:
            UserError: the file system does not support locks (mount it with locking, or use one worker).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise UserError(f"{self.path}: cannot lock ({err.strerror}); the study folder's file system must "
                            "support flock locks for several workers") from None
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "UnitLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_path(study: Path, unit_id: str, failed: bool = False) -> Path:
    return study / "units" / f"{unit_id}{'.failed' if failed else ''}.json"


def is_finished(study: Path, unit_id: str) -> bool:
    return record_path(study, unit_id).is_file()


def has_failed(study: Path, unit_id: str) -> bool:
    return record_path(study, unit_id, failed=True).is_file()


def failed_since(study: Path, unit_id: str, since: float) -> bool:
    """Whether the unit's last failure was recorded at or after `since` (a time.time() value)."""
    try:
        return record_path(study, unit_id, failed=True).stat().st_mtime >= since
    except FileNotFoundError:  # never failed, or another worker has since finished it
        return False


def write_record(study: Path, unit_id: str, kind: str, started: float, error: str | None = None) -> None:
    """The finished (or failed) record of a unit; a finished record removes an earlier failure's."""
    doc: dict[str, Any] = {"id": unit_id, "kind": kind, "wall_s": round(time.time() - started, 2),
                           "host": socket.gethostname(), "pid": os.getpid(), "finished": now_iso()}
    if error is not None:
        doc["error"] = error
    atomic_write_json(record_path(study, unit_id, failed=error is not None), doc)
    if error is None:
        record_path(study, unit_id, failed=True).unlink(missing_ok=True)


def read_record(study: Path, unit_id: str) -> dict[str, Any] | None:
    path = record_path(study, unit_id)
    return json.loads(path.read_text()) if path.is_file() else None
