"""A study's answer (its aggregate results.json, written by ``synthmed study``): per real-set size, each
arm against real-only and real + augmentation, with the verdict sentences, protocol and wall times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _size_key(size: str) -> tuple[int, str]:
    return (int(size), size) if str(size).isdigit() else (1 << 30, str(size))


def study_section(path: Path) -> dict[str, Any]:
    """What the report shows of a study's results.json; a file that cannot be read gives a note."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"path": str(path), "problem": f"{path}: cannot read ({err})", "verdicts": []}
    comparisons = doc.get("comparisons") or {}
    arms = doc.get("arms") or {}
    sizes = [{"real_size": size, "rows": comparisons[size], "arms": arms.get(size, []),
              "labels": {a["arm"]: a["label"] for a in arms.get(size, [])}}
             for size in sorted(comparisons, key=_size_key)]
    finished = doc.get("finished_units")
    return {
        "path": str(path), "problem": None, "name": doc.get("name"), "protocol": doc.get("protocol"),
        "real_sizes": doc.get("real_sizes"), "seeds": doc.get("seeds"), "method": doc.get("method"),
        "units_finished": len(finished) if isinstance(finished, list) else None, "units": doc.get("units"),
        "sizes": sizes, "verdicts": doc.get("verdicts") or [],
        "wall_s": doc.get("wall_s_per_stage") or {},
    }
