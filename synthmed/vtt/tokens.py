"""Access tokens and session ids of a study.

A token reads ``vtt_<study id>_<secret>``: 12 hex characters naming the study, then 256 random bits
(43 URL-safe characters). Only its SHA-256 is stored. A token is accepted only when its study part
equals the served study's id *and* its hash is in that study's database, so a token of study A is
never accepted by study B, even when both databases were copied from one another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_PATTERN = re.compile(r"^vtt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
STUDY_ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")
MAX_TOKEN_CHARS = 200  # anything longer is refused before hashing


def new_study_id() -> str:
    """A fresh random study id (12 hex characters)."""
    return secrets.token_hex(6)


def new_token(study_id: str) -> str:
    """A fresh token for `study_id`."""
    if not STUDY_ID_PATTERN.match(study_id):
        raise ValueError(f"bad study id {study_id!r}")
    return f"vtt_{study_id}_{secrets.token_urlsafe(32)}"


def new_session_id() -> str:
    """A fresh random session id for the session cookie (256 bits)."""
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    """Hex SHA-256 of a token or session id: what the database stores."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def token_study_id(token: str) -> str | None:
    """The study id a well-formed token names, or None for anything else."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    match = TOKEN_PATTERN.match(token)
    return match.group(1) if match else None


def token_is_for_study(token: str, study_id: str) -> bool:
    """True when `token` is well formed and names `study_id` (its hash must still be checked)."""
    named = token_study_id(token)
    return named is not None and hmac.compare_digest(named, study_id)
