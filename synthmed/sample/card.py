"""Dataset cards: what produced a synthetic set, so that it can be traced and audited."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import synthmed
from synthmed.errors import UserError
from synthmed.fileio import sha256_file

CARD_FORMAT = "synthmed-card"
CARD_FORMAT_VERSION = 1


def build_card(
    *,
    model: str,  # model family name, e.g. "hagan"
    checkpoint_path: str | os.PathLike,  # the checkpoint the samples came from; hashed here
    manifest_sha256: str,  # sha256 of the manifest.json the generator was trained on
    trained_on: list[str],  # ids of every case the generator saw (over its run's whole history)
    seed: int | None,  # sampling seed of the one stream the pairs came from (None: one seed per pair)
    count: int,  # number of synthetic pairs
    config: dict[str, Any],  # resolved sampling / model configuration (JSON-serialisable)
    extra: dict[str, Any] | None = None,  # anything else worth recording
    warnings: list[str] | None = None,  # what the user should know about the set (e.g. empty masks)
    seeds: list[int] | None = None,  # per-pair seeds (``sample --seeds``), in the order of the cases
) -> dict[str, Any]:
    """Build the dataset card written next to a synthetic set (``card.json``).

    Keys: ``format`` ("synthmed-card"), ``format_version`` (1), ``model``, ``checkpoint``
    (``{"path", "sha256"}``), ``manifest`` (``{"sha256"}``), ``trained_on_case_ids`` (sorted; the
    downstream leakage guard reads it), ``seed``, ``seeds`` (pair k's own seed, in case order; None when every pair came from the one stream of
    ``seed``), ``count``, ``synthmed_version``, ``created``
    (ISO 8601, UTC), ``config``, ``metrics`` and ``privacy_check``, ``warnings`` (list of
    strings, e.g. how many masks are empty), and ``extra``.

    ``metrics`` (``{}``) and ``privacy_check`` (``None``) are placeholders: the sample stage does not
    measure anything; the evaluate stage fills them in.

    Raises:
        UserError: the checkpoint file does not exist.
    """
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise UserError(f"{checkpoint_path}: checkpoint file not found")
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "model": model,
        "checkpoint": {"path": str(checkpoint_path), "sha256": sha256_file(checkpoint_path)},
        "manifest": {"sha256": manifest_sha256},
        "trained_on_case_ids": sorted(str(c) for c in trained_on),
        "seed": None if seed is None else int(seed),
        "seeds": None if seeds is None else [int(s) for s in seeds],
        "count": int(count),
        "synthmed_version": synthmed.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "metrics": {},
        "privacy_check": None,
        "warnings": list(warnings or []),
        "extra": dict(extra or {}),
    }


def load_card(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``card.json`` (or the ``card.json`` inside a synthetic-set folder).

    Raises:
        UserError: the file is missing, is not JSON, is not a synthmed card, or has a newer
            format version than this synthmed understands. The message names the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "card.json"
    if not path.is_file():
        raise UserError(f"{path}: dataset card not found")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid JSON file ({e})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise UserError(f"{path}: not a synthmed dataset card (expected \"format\": \"{CARD_FORMAT}\")")
    version = card.get("format_version")
    if not isinstance(version, int) or version > CARD_FORMAT_VERSION:
        raise UserError(
            f"{path}: card format_version {version!r} is not supported "
            f"(this synthmed reads up to {CARD_FORMAT_VERSION}); upgrade synthmed"
        )
    return card
