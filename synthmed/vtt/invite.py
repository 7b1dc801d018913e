"""`synthmed vtt invite`: one token per rater (and per admin), each shown once and stored hashed."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from synthmed.errors import UserError, format_problems
from synthmed.vtt import db
from synthmed.vtt.study import Study, load_study
from synthmed.vtt.tokens import new_token, sha256_hex

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


@dataclass(frozen=True)
class Invitation:
    name: str
    role: str  # "rater" or "admin"
    token: str  # shown once; the database keeps only its SHA-256


def rater_order(study: Study, rater_index: int) -> list[str]:
    """Item order of the `rater_index`-th rater (0-based): their own seeded shuffle, or the study order."""
    if study.rater_order == "shared":
        return list(study.item_ids)
    permutation = np.random.default_rng([study.seed, 2, rater_index]).permutation(len(study.item_ids))
    return [study.item_ids[i] for i in permutation]


def _check_names(names: list[str], role_of: dict[str, str], reissue: bool) -> None:
    problems = []
    for name in names:
        if not NAME_PATTERN.match(name):
            problems.append(f"{name!r}: names are 1-64 letters, digits, spaces or . _ @ - (starting with a letter or digit)")
        elif name in role_of and not reissue:
            problems.append(f"{name!r}: already invited (pass --reissue to replace their token; ratings are kept)")
        elif name not in role_of and reissue:
            problems.append(f"{name!r}: not invited yet, nothing to reissue")
    if len(set(names)) != len(names):
        problems.append("a name is given twice")
    if problems:
        raise UserError(format_problems("vtt invite", problems))


def invite(study_dir: str | os.PathLike, raters: list[str], admins: list[str] = (), reissue: bool = False) -> list[Invitation]:
    """Create tokens for `raters` and `admins` (or replace them with `reissue`); return them.

    Each new rater gets every item of the study, in their own order (see `rater_order`).

    Raises:
        UserError: no names, a malformed or repeated name, a name already invited (without `reissue`)
            or not invited yet (with `reissue`).
    """
    study = load_study(study_dir)
    wanted = [(n, "rater") for n in raters] + [(n, "admin") for n in admins]
    if not wanted:
        raise UserError("vtt invite: give at least one rater name (or --admin NAME)")
    out = []
    with db.opened(study.db_path) as conn:
        db.check_database(conn, study.db_path, study.study_id)
        role_of = db.principal_names(conn)
        _check_names([n for n, _ in wanted], role_of, reissue)
        n_raters = sum(1 for r in role_of.values() if r == "rater")
        for name, role in wanted:
            token = new_token(study.study_id)
            if reissue:
                if role_of[name] != role:
                    raise UserError(f"vtt invite: {name!r} is invited as {role_of[name]}, not {role}")
                db.replace_token(conn, name, sha256_hex(token))
            else:
                order = rater_order(study, n_raters) if role == "rater" else []
                n_raters += role == "rater"
                db.add_principal(conn, name, role, sha256_hex(token), order)
            out.append(Invitation(name, role, token))
    return out
