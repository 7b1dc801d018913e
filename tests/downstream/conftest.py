"""Fixtures: synthetic sets in the layout `synthmed sample` writes, made from toy spheres."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sphere_sets import write_sphere_set


@pytest.fixture
def sphere_set(toy_prepared, tmp_path) -> Path:
    return write_sphere_set(tmp_path / "syn", toy_prepared, n=4)
