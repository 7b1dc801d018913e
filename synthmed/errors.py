"""Errors a user can fix. The CLI prints them as one clean message, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import ValidationError


class UserError(Exception):
    """Bad input or configuration: the message names the file or key and the problem."""


def format_problems(title: str, problems: list[str]) -> str:
    """One message listing every problem found, so the user fixes them all at once."""
    lines = [f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def validation_problems(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per pydantic error, naming the full key: ``train.stepz: unknown key``."""
    problems = []
    for e in err.errors():
        key = ".".join([p for p in [prefix, *map(str, e["loc"])] if p]) or "(top level)"
        if e["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        else:
            problems.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return problems


def unknown_name_message(what: str, name: str, options: Iterable[str]) -> str:
    """``unknown model 'dcgan'. Did you mean 'dcgan3d'? Available: ...``, for every name a user types."""
    options = sorted(options)
    close = difflib.get_close_matches(name, options, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Available: {', '.join(options)}"
