"""Run nnU-Net v2's own dataset integrity check (nnunetv2 from PyPI) on a folder, in this process.

`verify_dataset_integrity` checks its cases in a ``multiprocessing`` pool started with "spawn"; each
start re-imports nnU-Net (about 10 s on a busy CPU). Here the pool is replaced by a serial one, so the
same checks run in the test's own process.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest


class _SerialPool:
    def __init__(self, *_args, **_kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap(self, func, iterable):
        return list(itertools.starmap(func, iterable))


def verify_with_nnunet(folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What nnU-Net printed; raises (AssertionError or RuntimeError, as nnU-Net does) when it rejects `folder`.

    nnU-Net only prints some findings (an affine mismatch, unexpected labels before it raises), so the
    caller checks the text too (`assert_accepted`)."""
    module = pytest.importorskip(
        "nnunetv2.experiment_planning.verify_dataset_integrity",
        reason="nnunetv2 is not installed (see pyproject's test extra: pip install --no-deps nnunetv2)")
    monkeypatch.setattr(module, "multiprocessing", SimpleNamespace(get_context=lambda _kind: SimpleNamespace(Pool=_SerialPool)))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module.verify_dataset_integrity(str(folder), 1)
    return printed.getvalue()


def assert_accepted(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's integrity check passes on `folder` without printing an error or a warning."""
    text = verify_with_nnunet(folder, monkeypatch)
    assert "verify_dataset_integrity Done" in text, text
    assert "Error" not in text and "Warning" not in text and "WARNING" not in text, text
