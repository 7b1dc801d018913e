"""Atomic writes: outputs appear under their final name only when complete.

Output folders (`atomic_directory`) are built in a hidden sibling ``.<name>.<random>.partial`` that
records its owner (pid, host) and is renamed to ``<name>`` only when complete; a leftover of a killed
run is removed when the next run on the same folder starts and its owner is gone. Every finished
folder holds a marker file (`OUTPUT_MARKER`) naming the command that wrote it and what it wrote:
``--overwrite`` replaces only such a folder, written by the same command and holding nothing else,
and never one of the command's inputs. A command that writes its folder in place and resumes it
(``downstream``) marks it when it starts and follows the same rules (`check_resumable_folder`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch

from synthmed.errors import UserError

OUTPUT_MARKER = ".synthmed-output"  # in every folder written through atomic_directory
OWNER_FILE = ".synthmed-owner"  # in a .partial folder while its writer runs: pid, host, process start
PARTIAL_SUFFIX = ".partial"
ORPHAN_GRACE_S = 60.0  # a .partial folder without an owner file is a leftover once it is this old

PathLike = str | os.PathLike


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_sibling(path: Path) -> Path:
    """An empty hidden file beside `path`, with the mode a new file gets (mkstemp alone makes it 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def atomic_write_text(path: PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_partial_output(path: PathLike) -> bool:
    """True for a hidden ``.<name>.<random>.partial`` folder: an output still being written, or a leftover."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def refuse_partial_input(path: PathLike, what: str) -> None:
    """Raise a UserError when the input `path` is a half-written output folder (see `is_partial_output`)."""
    if is_partial_output(path):
        raise UserError(f"{what} {path}: a half-written output folder (.partial) left by an interrupted or running "
                        "command; it is never used as input. Rerun the command that writes it")


def check_output_folder(final: PathLike, *, kind: str, inputs: Iterable[PathLike | None] = (),
                        overwrite: bool = False) -> Path:
    """Check that `final` may be written by the command `kind`; return it resolved.

    Args:
        final: the output folder (``--out``).
        kind: the command writing it, e.g. ``"prepare"``; recorded in its `OUTPUT_MARKER`.
        inputs: the paths the command reads (None entries are skipped).
        overwrite: replace an existing `final`.

    Raises:
        UserError: `final` is, contains or lies inside an input; it exists without `overwrite`; or
            it exists but was not written by synthmed's `kind` command (no marker, or another one),
            or holds files that command did not write (see `foreign_entries`).
    """
    final = refuse_overlap(final, inputs)
    if not (final.exists() or final.is_symlink()):
        return final
    if not overwrite:
        raise UserError(f"{final}: output folder already exists (pass --overwrite to replace it)")
    marker = read_output_marker(final)
    if marker is None:
        raise UserError(
            f"{final}: not written by synthmed (no {OUTPUT_MARKER} marker), so synthmed will not replace it; "
            "remove it yourself or choose another --out. (Folders written by synthmed before markers existed "
            "have none either: check them and delete them by hand.)")
    if marker.get("kind") != kind:
        raise UserError(f"{final}: written by `synthmed {marker.get('kind')}`, so `synthmed {kind} --overwrite` "
                        "will not replace it; remove it yourself or choose another --out")
    foreign = foreign_entries(final, marker)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"{final}: holds files synthmed did not write there ({shown}), so --overwrite will not "
                        "replace it; move them away, or remove the folder yourself, or choose another --out")
    return final


def foreign_entries(folder: Path, marker: dict[str, Any]) -> list[str]:
    """Top-level entries of a marked `folder` that its writer did not leave there.

    Allowed besides the entries the marker lists: files that grow beside a listed one (SQLite's
    ``vtt.sqlite3-wal``), temporary files of an interrupted atomic write (``.card.json.x.tmp``) and
    folders that synthmed wrote into it later (they hold their own marker, e.g. a study's analysis).
    """
    listed = marker.get("entries")
    if not isinstance(listed, list):
        return []  # a marker without a listing: nothing to compare with
    foreign = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if name in listed or name == OUTPUT_MARKER or any(
                name.startswith(f"{e}-") or (name.startswith(f".{e}.") and name.endswith(".tmp")) for e in listed):
            continue
        if path.is_dir() and not path.is_symlink() and read_output_marker(path) is not None:
            continue
        foreign.append(name)
    return foreign


def _refuse_overlap(final: Path, given: Path, allow_containing: bool = False) -> None:
    if final == given:
        relation = "is"
    elif given in final.parents:
        relation = "lies inside"
    elif final in given.parents and not allow_containing:
        relation = "contains"
    else:
        return
    raise UserError(f"--out {final} {relation} the input {given}; choose an output folder outside every input")


def refuse_overlap(final: PathLike, inputs: Iterable[PathLike | None], allow_containing: bool = False) -> Path:
    """Refuse an output folder that is, lies inside or (unless `allow_containing`) contains an input; return it resolved.

    Raises:
        UserError: naming both folders.
    """
    final = Path(final).expanduser().resolve()
    for given in inputs:
        if given is not None:
            _refuse_overlap(final, Path(given).expanduser().resolve(), allow_containing)
    return final


def check_resumable_folder(folder: PathLike, *, kind: str, entries: list[str], inputs: Iterable[PathLike | None] = (),
                           overwrite: bool = False) -> Path:
    """Check an output folder that the command `kind` writes in place and resumes on a rerun; return it resolved.

    A new or empty folder is fine. An existing one is resumed (or, with `overwrite`, emptied of its
    `entries`) only when synthmed's `kind` wrote it (its `OUTPUT_MARKER`) and it holds nothing else. A
    folder without the marker holding only `entries` (written before markers existed) may be resumed,
    never overwritten.

    Args:
        folder: the output folder (``--out``).
        kind: the command writing it, recorded in its marker (see `mark_resumable_folder`).
        entries: the top-level names the command writes there.
        inputs: the paths the command reads (None entries are skipped).
        overwrite: the command will delete `entries` before it starts.

    Raises:
        UserError: `folder` overlaps an input, is not a folder, was written by another command, holds
            files the command did not write, or (with `overwrite`) has no marker.
    """
    folder = refuse_overlap(folder, inputs)
    if not (folder.exists() or folder.is_symlink()):
        return folder
    if not folder.is_dir() or folder.is_symlink():
        raise UserError(f"{folder}: not a folder; choose another --out")
    marker = read_output_marker(folder)
    if marker is None and not any(folder.iterdir()):
        return folder
    if marker is None and overwrite:
        raise UserError(f"{folder}: not written by synthmed (no {OUTPUT_MARKER} marker), so --overwrite will not "
                        "replace it; remove it yourself or choose another --out")
    if marker is not None and marker.get("kind") != kind:
        raise UserError(f"{folder}: written by `synthmed {marker.get('kind')}`, not by `synthmed {kind}`; "
                        "choose another --out")
    foreign = foreign_entries(folder, marker if marker is not None else {"entries": entries})
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"{folder}: holds files `synthmed {kind}` did not write there ({shown}); "
                        "choose another --out, or move them away")
    return folder


def mark_resumable_folder(folder: Path, kind: str, entries: list[str], overwrite: bool = False) -> None:
    """Create `folder` (checked by `check_resumable_folder`) with its marker; with `overwrite`, first delete `entries`.

    Raises:
        UserError: the folder cannot be created or written.
    """
    try:
        if overwrite and folder.is_dir():
            for name in entries:
                path = folder / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        if read_output_marker(folder) is None:
            write_output_marker(folder, kind, entries)
    except OSError as e:
        raise _unwritable(folder, e) from None


def write_output_marker(folder: Path, kind: str, entries: list[str]) -> None:
    """Mark `folder` as written by ``synthmed <kind>``, holding `entries` (what --overwrite may delete)."""
    atomic_write_json(folder / OUTPUT_MARKER, {
        "format": "synthmed-output", "kind": kind, "written_by": f"synthmed {kind}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "entries": entries,
    })


def read_output_marker(folder: PathLike) -> dict[str, Any] | None:
    """The `OUTPUT_MARKER` document of a folder written by synthmed, or None when it has none."""
    path = Path(folder) / OUTPUT_MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


@contextlib.contextmanager
def atomic_directory(final: PathLike, *, kind: str, inputs: Iterable[PathLike | None] = (),
                     overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes `final` only if the block succeeds.

    On any error the temporary folder is removed, so no half-written output is left behind; one left
    by a killed run is removed when the next run on `final` starts. The finished folder holds an
    `OUTPUT_MARKER` and the usual mode of a new folder (0o777 minus the umask).

    Args:
        final, kind, inputs, overwrite: see `check_output_folder`.

    Raises:
        UserError: see `check_output_folder`; also when the folder cannot be created or renamed
            (no permission, a file in the way), naming it.
    """
    inputs = list(inputs)
    final = check_output_folder(final, kind=kind, inputs=inputs, overwrite=overwrite)
    tmp = _make_partial(final)
    try:
        yield tmp
        _finish(tmp, final, kind, inputs, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _make_partial(final: Path) -> Path:
    """Create the hidden ``.<name>.<random>.partial`` sibling of `final`, owned by this process."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX, dir=final.parent))
    except OSError as e:
        raise _unwritable(final, e) from None
    try:
        (tmp / OWNER_FILE).write_text(json.dumps(_owner()) + "\n")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unwritable(final, e) from None
    return tmp


def _finish(tmp: Path, final: Path, kind: str, inputs: list, overwrite: bool) -> None:
    """Mark `tmp` as complete and rename it to `final`, replacing an old `final` only at the last moment."""
    (tmp / OWNER_FILE).unlink()
    write_output_marker(tmp, kind, sorted(os.listdir(tmp)))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700; a new folder would have the usual mode
    check_output_folder(final, kind=kind, inputs=inputs, overwrite=overwrite)  # it may have appeared meanwhile
    old = None
    try:
        if final.exists():
            old = final.with_name(f".{final.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")  # a leftover if killed now
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as e:
        if old is not None and not final.exists():
            os.replace(old, final)
        raise _unwritable(final, e) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _unwritable(final: Path, err: OSError) -> UserError:
    return UserError(f"{final}: cannot write the output folder ({err.strerror or err}); "
                     "choose an --out in a folder you can write to")


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it to read it)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process `pid` (Linux), which tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name in parentheses may hold spaces


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}


def _owner_alive(partial: Path) -> bool:
    """Whether the process that writes `partial` may still run (unknown owners on other hosts count as alive)."""
    try:
        owner = json.loads((partial / OWNER_FILE).read_text())
        pid, host, start = int(owner["pid"]), str(owner["host"]), owner.get("start")
    except (OSError, ValueError, KeyError, TypeError):  # no owner file: being created, finished, or very old
        with contextlib.suppress(OSError):
            return time.time() - partial.stat().st_mtime < ORPHAN_GRACE_S
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return start is None or _process_start(pid) in (None, start)


def remove_stale_partials(final: PathLike) -> list[Path]:
    """Remove the ``.<name>.<random>.partial`` leftovers of `final` whose writer is gone; return them."""
    final = Path(final)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.[A-Za-z0-9_]{{8}}{re.escape(PARTIAL_SUFFIX)}$")
    removed = []
    if not final.parent.is_dir():
        return removed
    for path in final.parent.iterdir():
        if pattern.match(path.name) and path.is_dir() and not path.is_symlink() and not _owner_alive(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def atomic_savefig(fig, path: PathLike, **kwargs: Any) -> Path:
    """Save a matplotlib figure under a temporary name, then rename it; the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
