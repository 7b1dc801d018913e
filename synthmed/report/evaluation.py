"""Evaluation: the fidelity table with the real-vs-real reference and the ratio, diversity, memorisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthmed.report.figures import png_file_uri

PRDC = ("precision", "recall", "density", "coverage")
CLOSEST_PAIRS_PNG = "memorisation_closest_pairs.png"
FIGURE_TITLES = {"montage.png": "real and synthetic cases", "intensity_histograms.png": "intensity histograms"}


def _value(entry: Any) -> float | None:
    return entry.get("value") if isinstance(entry, dict) else None


def _ratio(synthetic: float | None, reference: float | None) -> float | None:
    """synthetic / real-vs-real; None when either is missing or the reference is not positive."""
    if synthetic is None or reference is None or reference <= 0:
        return None
    return synthetic / reference


def _notes(entry: Any, notes: list[str]) -> None:
    if isinstance(entry, dict):
        for text in (entry.get("notes") or {}).values():
            if text not in notes:
                notes.append(text)


def fidelity_rows(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per modality (images, masks) and feature space; the notes of every figure, once each."""
    rows, notes = [], []
    for modality in ("images", "masks"):
        for space, block in (doc.get(modality) or {}).items():
            syn = block.get("synthetic_vs_real") or {}
            ref = block.get("real_train_vs_real_test") or {}
            fd, fd_ref = _value(syn.get("frechet_distance")), _value(ref.get("frechet_distance"))
            kid, kid_ref = _value(syn.get("kid_mean")), _value(ref.get("kid_mean"))
            for entry in (syn.get("frechet_distance"), ref.get("frechet_distance"), syn.get("kid_mean"), ref.get("kid_mean")):
                _notes(entry, notes)
            rows.append({"modality": modality, "space": space, "fd": fd, "fd_ci": (syn.get("frechet_distance") or {}).get("ci95"),
                         "fd_ref": fd_ref, "fd_ratio": _ratio(fd, fd_ref), "kid": kid, "kid_ref": kid_ref,
                         **{k: _value(syn.get(k)) for k in PRDC}})
    return rows, notes


def diversity_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for modality, block in (doc.get("diversity") or {}).items():
        ms_ssim = (block or {}).get("ms_ssim") or {}
        if ms_ssim:
            rows.append({"modality": modality, "synthetic": (ms_ssim.get("synthetic") or {}).get("mean"),
                         "real": (ms_ssim.get("real") or {}).get("mean")})
    return rows


def memorisation(doc: dict[str, Any], folder: Path) -> dict[str, Any] | None:
    audit = doc.get("memorisation")
    if not isinstance(audit, dict):
        return None
    return {**audit, "closest": audit.get("closest") or [], "flagged": audit.get("flagged") or [],
            "image": png_file_uri(folder / CLOSEST_PAIRS_PNG)}


def _figures(doc: dict[str, Any], folder: Path) -> list[dict[str, str]]:
    figures = []
    for name in doc.get("plots") or sorted(p.name for p in folder.glob("*.png")):
        if name == CLOSEST_PAIRS_PNG:
            continue  # shown with the memorisation audit
        uri = png_file_uri(folder / name)
        if uri:
            title = FIGURE_TITLES.get(name, name.removesuffix(".png").replace("_", " "))
            figures.append({"title": title, "uri": uri})
    return figures


def evaluation_section(folder: Path, root: Path) -> dict[str, Any]:
    """What the report shows of one `synthmed evaluate` output folder."""
    path = folder / "metrics.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"name": folder.name, "path": str(folder), "problem": f"{path}: cannot read ({err})"}
    rows, notes = fidelity_rows(doc)
    unavailable = {name: space.get("reason", "") for name, space in (doc.get("feature_spaces") or {}).items()
                   if isinstance(space, dict) and space.get("status") != "ok"}
    return {
        "name": str(folder.relative_to(root)) if folder != root else folder.name, "path": str(folder), "problem": None,
        "real": doc.get("real") or {}, "synthetic": doc.get("synthetic") or {}, "reference": doc.get("reference") or {},
        "intervals": (doc.get("intervals") or {}).get("method"), "fidelity": rows, "notes": notes,
        "unavailable": unavailable, "diversity": diversity_rows(doc), "memorisation": memorisation(doc, folder),
        "figures": _figures(doc, folder),
    }
