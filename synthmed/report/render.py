"""Build the report's context from a folder and render it to one self-contained HTML file."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from synthmed import __version__
from synthmed.errors import UserError
from synthmed.fileio import atomic_write_text
from synthmed.report.data_section import data_section, manifest_paths
from synthmed.report.downstream_section import downstream_section
from synthmed.report.evaluation import evaluation_section
from synthmed.report.folders import COLLECTION_KINDS, Outputs, find_outputs
from synthmed.report.generators import generator_section
from synthmed.report.study_section import study_section

GENERATOR = "synthmed report"  # the <meta name="generator"> that marks a file this command may replace
REPORT_NAME = "report.html"
KIND_TEXT = {"study": "study folder", "demo": "demo folder", "train": "training run folder",
             "evaluate": "evaluation folder (synthmed evaluate)", "downstream": "downstream benchmark folder"}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt_number(value: Any) -> str:
    """4 significant digits; '–' for a missing or non-finite value."""
    if not _finite(value):
        return "–" if value is None or isinstance(value, float) else str(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def fmt_dice(value: Any) -> str:
    return f"{value:.3f}" if _finite(value) else "–"


def _minus(text: str) -> str:
    """A typographic minus for a leading '-' (an exponent's '-' stays)."""
    return "−" + text[1:] if text.startswith("-") else text


def fmt_signed(value: Any) -> str:
    return _minus(f"{value:+.3f}") if _finite(value) else "–"


def fmt_ci(value: Any, spec: str = ".4g") -> str:
    """'[lo, hi]' of a [lo, hi] list or of a dict with ci_low / ci_high; '' when absent."""
    if isinstance(value, dict):
        value = [value.get("ci_low"), value.get("ci_high")]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_finite(v) for v in value):
        return f"[{_minus(format(value[0], spec))}, {_minus(format(value[1], spec))}]"
    return ""


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("synthmed.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True))
    env.filters.update(num=fmt_number, dice=fmt_dice, signed=fmt_signed, ci=fmt_ci)
    return env


def _short(path: Path, root: Path) -> str:
    """`path` relative to the report's folder (or its parent) when inside it, else in full."""
    for base in (root, root.parent):
        if base in path.parents:
            return str(path.relative_to(base))
    return str(path)


def unique_manifests(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One section per manifest content (a copied study names the same manifest at two paths)."""
    seen, unique = set(), []
    for section in sections:
        key = section.get("sha256") or section["path"]
        if key not in seen:
            seen.add(key)
            unique.append(section)
    return unique


def report_context(outputs: Outputs) -> dict[str, Any]:
    """Everything the template shows, read from the folders `find_outputs` found."""
    root = outputs.folder
    downstream = [downstream_section(d, root) for d in outputs.downstream]
    study = study_section(outputs.study_results) if outputs.study_results else None
    # a study's verdicts pool its slices (seeds, folds); each slice's own verdicts stay in its table
    verdicts = study["verdicts"] if study else [v for d in downstream for v in d.get("verdicts", [])]
    return {
        "generator": GENERATOR, "title": root.name, "folder": str(root), "kind_text": KIND_TEXT.get(outputs.kind, outputs.kind),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": __version__,
        "verdicts": verdicts, "study": study,
        "any_ci": bool(study) or any(c.get("ci_low") is not None for d in downstream for c in d.get("comparisons", [])),
        "data": unique_manifests([{**data_section(p), "name": _short(p, root)} for p in manifest_paths(outputs)]),
        "generators": [generator_section(run, root, outputs.sample) for run in outputs.train],
        "evaluations": [evaluation_section(e, root) for e in outputs.evaluate],
        "downstream": downstream,
    }


def render_report(outputs: Outputs) -> str:
    return environment().get_template("report.html.j2").render(report_context(outputs))


def default_out(outputs: Outputs) -> Path:
    """DIR/report.html for a study or demo folder; beside DIR for a single output folder, which holds
    only what its own command wrote (a foreign file there would block that command's resume)."""
    folder = outputs.folder
    if outputs.kind in COLLECTION_KINDS:
        return folder / REPORT_NAME
    return folder.parent / f"{folder.name}_{REPORT_NAME}"


def is_report_file(path: Path) -> bool:
    """Whether `path` is an HTML report an earlier `synthmed report` wrote (and may be replaced)."""
    try:
        with path.open("rb") as f:
            head = f.read(2048).decode("utf-8", "replace")
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head


def check_out(out: Path, outputs: Outputs) -> Path:
    """Refuse an --out that is a folder, lies inside a reported output folder, or is a file that
    synthmed did not write; return it resolved.

    Raises:
        UserError: naming --out and the problem.
    """
    out = out.expanduser().resolve()
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give the HTML file's path (e.g. {out / REPORT_NAME})")
    inside = [f for f in (*outputs.train, *outputs.evaluate, *outputs.downstream, *outputs.sample, *outputs.prepare)
              if f.resolve() in out.parents]
    if inside:
        raise UserError(f"--out {out} lies inside {inside[0]}, which holds only what its own command wrote; "
                        "write the report elsewhere")
    if out.exists() and not is_report_file(out):
        raise UserError(f"--out {out}: exists and is not a report written by synthmed, so it is not replaced")
    return out


def write_report(folder: Path, out: Path | None = None) -> Path:
    """Write one self-contained HTML report (images inline, no scripts, no network) of `folder`.

    Args:
        folder: a study or demo folder, or one train / evaluate / downstream output folder.
        out: the HTML file; default `default_out`. An existing file is replaced only when an earlier
            `synthmed report` wrote it.

    Returns:
        The path of the written HTML file.

    Raises:
        UserError: `folder` is missing, empty or not a reportable synthmed folder, or `out` is refused
            (see `check_out`); nothing is written then.
    """
    outputs = find_outputs(Path(folder).expanduser().resolve())
    target = check_out(Path(out) if out is not None else default_out(outputs), outputs)
    html = render_report(outputs)
    try:
        atomic_write_text(target, html)
    except OSError as err:
        raise UserError(f"--out {target}: cannot write the report ({err.strerror or err})") from None
    return target
