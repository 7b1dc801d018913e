"""YAML configurations validated by pydantic, with ``--set a.b=c`` overrides (train and downstream).

Unknown keys and bad values are errors that name the key. A stage defines its sections on
`StrictModel`, validates with `validate_config`, and writes the resolved result with `config_to_yaml`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from synthmed.errors import UserError, validation_problems

Config = TypeVar("Config", bound=BaseModel)


class StrictModel(BaseModel):
    """A configuration section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file.

    Raises:
        UserError: the file is missing, not valid YAML, or not a mapping.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=c`` strings to `raw` in place; values are parsed as YAML (numbers, lists, booleans).

    Raises:
        UserError: an item is not ``KEY=VALUE``, or a key goes through a value instead of a section.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=200")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    """``SOURCE: invalid configuration:`` followed by one line per problem, naming the full key."""
    return f"{source}: invalid configuration:\n  " + "\n  ".join(validation_problems(err, prefix))


def validate_config(model: type[Config], raw: dict, overrides: Sequence[str] = (), source: str = "config") -> Config:
    """Validate a raw dict, after applying ``a.b=c`` `overrides` to a shallow copy, into `model`.

    Raises:
        UserError: naming `source` and every bad or unknown key.
    """
    raw = apply_overrides(dict(raw), overrides)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(source, err)) from None


def config_to_yaml(config: BaseModel) -> str:
    """The configuration as YAML, keys in field order (what run folders store as ``config.yaml``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
