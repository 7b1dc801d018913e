"""Fixtures of the visual Turing test: toy real cases, a toy synthetic set, a study, tokens, servers."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.data.toy import write_toy_dataset
from synthmed.vtt.invite import invite
from synthmed.vtt.render import png_chunk_types
from synthmed.vtt.study import KEY_FILE, StudyOptions, create_study
from tests.sphere_sets import write_sphere_set

STUDY_ITEMS = 8
ALLOWED_PNG_CHUNKS = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}
ORIGIN_WORDS = re.compile(r"\b(real|synthetic|synth|fake)\b", re.IGNORECASE)


@pytest.fixture(scope="session")
def vtt_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest path of 12 prepared toy cases (9 train), synthetic set folder of 10 spheres)."""
    root = tmp_path_factory.mktemp("vtt_inputs")
    raw = write_toy_dataset(root / "toy_msd", layout="msd")
    options = PrepareOptions(shape=(16, 16, 16), spacing=None, test_fraction=0.2, val_fraction=0.1, folds=0)
    manifest = prepare_dataset([raw], root / "prepared", options, progress=False)
    return manifest, write_sphere_set(root / "spheres", manifest, n=10)


@pytest.fixture(scope="session")
def base_study(vtt_inputs, tmp_path_factory) -> Path:
    """A study of 8 items (4 real, 4 synthetic), never rated: copy it before use (see `study`)."""
    manifest, synthetic = vtt_inputs
    return create_study(str(manifest), [synthetic], tmp_path_factory.mktemp("vtt_base") / "study",
                        StudyOptions(n=STUDY_ITEMS, seed=3))


@pytest.fixture
def study(base_study, tmp_path) -> Path:
    """A fresh copy of `base_study` (same study id, empty database)."""
    return Path(shutil.copytree(base_study, tmp_path / "study"))


@pytest.fixture
def tokens(study) -> dict[str, str]:
    """Tokens of raters "alice" and "bob" and admin "boss"."""
    return {i.name: i.token for i in invite(study, ["alice", "bob"], admins=["boss"])}


def leak_markers(study: Path) -> list[str]:
    """Strings that would reveal an origin: case and set names and input paths from key.json."""
    key = json.loads((study / KEY_FILE).read_text())
    markers = {e["case"] for e in key["items"].values()} | {e["set"] for e in key["items"].values()}
    markers |= {key["inputs"]["real"]["manifest"]} | {s["path"] for s in key["inputs"]["synthetic"]}
    markers |= {s["name"] for s in key["inputs"]["synthetic"]} | {KEY_FILE}
    return sorted(markers)


def assert_blind_text(text: str, study: Path, where: str) -> None:
    """No origin word and no key content in a text served to raters."""
    found = ORIGIN_WORDS.search(text)
    assert found is None, f"{where}: origin word {found.group(0)!r} served"
    for marker in leak_markers(study):
        assert marker not in text, f"{where}: {marker!r} from the key served"


def assert_clean_png(data: bytes, where: str) -> None:
    extra = set(png_chunk_types(data)) - ALLOWED_PNG_CHUNKS
    assert not extra, f"{where}: PNG metadata chunks {extra}"


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
