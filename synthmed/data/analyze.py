"""`synthmed analyze`: per-source summary of raw datasets (or of a prepared folder).

For raw inputs (same discovery as `prepare`) it reads every case and reports, per source: number of
cases, shapes (min/median/max per axis), spacings, per-case raw intensity min/max (summarised),
label values and label volumes in voxels and mm³. Cases that cannot be read are listed as problems
rather than raised: this command is for looking at data, `prepare` is the one that refuses.

For 2D images (PNG, JPEG, TIFF) it reports the same per source, with label areas in input pixels
instead of mm³, plus what matters for 2D: number of distinct sizes, pixel types (8/16-bit), colour
against grayscale images, how masks were read (0/255 binary, labels, JPEG threshold) and the number
of mid-grey JPEG mask pixels.

For a prepared folder (holding ``manifest.json``) it summarises the cache: cases per split,
shape, spacing, per-case intensity ranges, label volumes (2D: areas, in mm² for slices of volumes,
in input pixels for images) and what preprocessing cut or fixed.

Each source entry names its size measure in ``size_key`` (``label_mm3``, ``label_mm2`` or
``label_input_px``); case entries hold the measure under that key.

With ``out_dir`` it also writes ``analysis.json`` and PNG plots (intensity range per case, label
volumes, shapes), atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.checks import read_nifti, read_volume
from synthmed.data.discover import discover_sources, strip_nifti_suffix
from synthmed.data.images2d import read_image_2d, read_mask_2d
from synthmed.data.manifest import MANIFEST_NAME, load_manifest
from synthmed.data.preprocess import affine_spacing
from synthmed.fileio import atomic_directory, atomic_write_json, check_output_folder


def _stats(values: list[float] | np.ndarray) -> dict[str, float] | None:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def _axis_stats(rows: list[list[float]]) -> dict[str, list[float]] | None:
    if not rows:
        return None
    a = np.asarray(rows, dtype=np.float64)
    return {"min": a.min(0).tolist(), "median": np.median(a, 0).tolist(), "max": a.max(0).tolist()}


def _read_channels(image_path: Path | list[Path], problems: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(image [C, D, H, W], affine) of one file (a 4D NIfTI holds C channels) or of one file per channel."""
    paths = image_path if isinstance(image_path, list) else [image_path]
    reads = [read_nifti(p, problems, channels=True) if len(paths) == 1 and strip_nifti_suffix(p.name) is not None
             else read_volume(p, problems) for p in paths]
    if any(r is None for r in reads):
        return None
    if len({r[0].shape for r in reads}) > 1:  # type: ignore[index]
        problems.append(f"{paths[0]}: channel files differ in shape ({', '.join(p.name for p in paths)})")
        return None
    image = np.stack([r[0] for r in reads]) if len(reads) > 1 else reads[0][0]  # type: ignore[index]
    return (image if image.ndim == 4 else image[None]), reads[0][1]  # type: ignore[index]


def analyze_raw_case(image_path: Path | list[Path], label_path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Statistics of one raw case (image: one file, or one file per channel), or None and the problems found."""
    problems: list[str] = []
    img = _read_channels(image_path, problems)
    msk = read_volume(label_path, problems)
    if img is None or msk is None:
        return None, problems
    channels, affine = img
    image = channels if len(channels) > 1 else channels[0]
    mask, _, _ = msk
    spacing = affine_spacing(affine)
    finite = np.isfinite(image)
    if not finite.all():
        problems.append(f"{image_path}: {int((~finite).sum())} NaN/Inf voxels")
    vals = np.asarray(image[finite], dtype=np.float64)
    if mask.shape != channels.shape[1:]:
        problems.append(f"{label_path}: mask shape {mask.shape} differs from image shape {channels.shape[1:]}")
    mask_i = np.rint(np.asarray(mask, dtype=np.float64)).astype(np.int64)
    labels, counts = np.unique(mask_i, return_counts=True)
    voxel_mm3 = float(np.prod(spacing))
    return {
        "shape": list(channels.shape[1:]),
        "channels": len(channels),
        "spacing": spacing,
        "dtype": str(image.dtype),
        "intensity": {
            "min": float(vals.min()) if vals.size else None,
            "max": float(vals.max()) if vals.size else None,
            "p0.5": float(np.percentile(vals, 0.5)) if vals.size else None,
            "p99.5": float(np.percentile(vals, 99.5)) if vals.size else None,
        },
        **({"intensity_per_channel": [_intensity_range(c) for c in channels]} if len(channels) > 1 else {}),
        "label_voxels": {str(int(k)): int(c) for k, c in zip(labels, counts) if k != 0},
        "label_mm3": {str(int(k)): float(c) * voxel_mm3 for k, c in zip(labels, counts) if k != 0},
    }, problems


def _intensity_range(channel: np.ndarray) -> dict[str, float | None]:
    vals = np.asarray(channel[np.isfinite(channel)], dtype=np.float64)
    if not vals.size:
        return {"min": None, "max": None}
    return {"min": float(vals.min()), "max": float(vals.max()),
            "p0.5": float(np.percentile(vals, 0.5)), "p99.5": float(np.percentile(vals, 99.5))}


def analyze_raw_case_2d(image_path: Path | list[Path], label_path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Statistics of one raw 2D image/mask pair (image: one file, or one grey file per channel), or None and
    the problems found."""
    problems: list[str] = []
    paths = image_path if isinstance(image_path, list) else [image_path]
    reads = [read_image_2d(p, problems) for p in paths]
    msk = read_mask_2d(label_path, problems)
    if any(r is None for r in reads) or msk is None:
        return None, problems
    img = reads[0]
    assert img is not None
    if len({r.pixels.shape for r in reads if r is not None}) > 1:
        problems.append(f"{paths[0]}: channel files differ in size ({', '.join(p.name for p in paths)})")
        return None, problems
    shape = list(img.pixels.shape[:2])
    if list(msk.labels.shape) != shape:
        problems.append(f"{label_path}: mask size {'x'.join(map(str, msk.labels.shape))} differs from image "
                        f"size {'x'.join(map(str, shape))} (H x W)")
    vals = np.concatenate([np.asarray(r.pixels, dtype=np.float64).ravel() for r in reads if r is not None])
    labels, counts = np.unique(msk.labels, return_counts=True)
    return {
        "shape": shape,
        "spacing": [1.0, 1.0],
        "dtype": img.pixel_type,
        "color": img.color,
        "intensity": {
            "min": float(vals.min()),
            "max": float(vals.max()),
            "p0.5": float(np.percentile(vals, 0.5)),
            "p99.5": float(np.percentile(vals, 99.5)),
        },
        **({"channels": len(reads), "intensity_per_channel": [_intensity_range(r.pixels) for r in reads if r is not None]}
           if len(reads) > 1 else {}),
        "mask_rule": msk.rule,
        "jpeg_midgrey_pixels": msk.midgrey_pixels,
        "label_voxels": {str(int(k)): int(c) for k, c in zip(labels, counts) if k != 0},
        "label_input_px": {str(int(k)): float(c) for k, c in zip(labels, counts) if k != 0},
    }, problems


def _summarise_2d(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def count(key: str) -> dict[str, int]:
        values = [str(r[key]) for r in rows if key in r]
        return {v: values.count(v) for v in sorted(set(values))}

    return {
        "distinct_sizes": len({tuple(r["shape"]) for r in rows}),
        "pixel_types": count("dtype"),
        "color_images": sum(1 for r in rows if r.get("color")),
        "mask_rules": count("mask_rule"),
        "jpeg_midgrey_pixels": sum(r.get("jpeg_midgrey_pixels", 0) for r in rows),
    }


def _summarise(cases: dict[str, dict[str, Any]], size_key: str = "label_mm3") -> dict[str, Any]:
    rows = list(cases.values())
    labels = sorted({k for r in rows for k in r["label_voxels"]}, key=int)
    summary = {
        "n_cases": len(rows),
        "shape": _axis_stats([r["shape"] for r in rows]),
        "spacing": _axis_stats([r["spacing"] for r in rows]),
        "intensity_min": _stats([r["intensity"]["min"] for r in rows if r["intensity"]["min"] is not None]),
        "intensity_max": _stats([r["intensity"]["max"] for r in rows if r["intensity"]["max"] is not None]),
        "label_voxels": {k: _stats([r["label_voxels"].get(k, 0) for r in rows]) for k in labels},
        size_key: {k: _stats([r[size_key].get(k, 0.0) for r in rows]) for k in labels},
        "empty_masks": sum(1 for r in rows if not r["label_voxels"]),
    }
    if rows and "mask_rule" in rows[0]:  # raw 2D images
        summary.update(_summarise_2d(rows))
    if any(r.get("channels", 1) > 1 for r in rows):  # multi-channel images: each channel's own range
        summary["channels"] = sorted({r["channels"] for r in rows})
        per_channel = [r["intensity_per_channel"] for r in rows if "intensity_per_channel" in r]
        summary["intensity_per_channel"] = [
            {"min": _stats([c[i]["min"] for c in per_channel if len(c) > i and c[i]["min"] is not None]),
             "max": _stats([c[i]["max"] for c in per_channel if len(c) > i and c[i]["max"] is not None])}
            for i in range(max(len(c) for c in per_channel))] if per_channel else []
    return summary


def _fmt_median(stats: dict[str, float] | None) -> str:
    return "-" if stats is None else f"{stats['median']:.4g}"


def _size_key(preprocessing: dict[str, Any]) -> str:
    if preprocessing.get("dims", 3) == 3:
        return "label_mm3"
    return "label_mm2" if preprocessing.get("spacing_unit") == "mm" else "label_input_px"


def _analyze_prepared(path: Path) -> dict[str, Any]:
    m = load_manifest(path)
    size_key = _size_key(m.preprocessing)
    voxel = {c["id"]: float(np.prod(c["spacing"])) for c in m.cases}
    cases = {
        c["id"]: {
            "shape": c["shape"],
            "spacing": c["spacing"],
            "dtype": "float32",
            "intensity": {"min": c["intensity"]["lo"], "max": c["intensity"]["hi"]},
            "label_voxels": {k: v for k, v in c["label_voxels"].items() if v},
            size_key: {k: v * voxel[c["id"]] for k, v in c["label_voxels"].items() if v},
            "foreground_lost_voxels": c["foreground_lost_voxels"],
            "fixes": c["fixes"],
            "source": c["source"],
        }
        for c in m.cases
    }
    summary = _summarise(cases, size_key)
    if m.preprocessing.get("input") == "images":
        summary["distinct_original_sizes"] = len({tuple(c["original_shape"]) for c in m.cases})
    summary["intensity_note"] = "intensity min/max are the raw values mapped to -1 and 1"
    summary["splits"] = {k: len(m.splits[k]) for k in ("train", "val", "test")}
    summary["folds"] = [len(f) for f in m.splits["folds"]]
    summary["foreground_lost_cases"] = sum(1 for c in m.cases if c["foreground_lost_voxels"] > 0)
    summary["foreground_lost_voxels"] = sum(c["foreground_lost_voxels"] for c in m.cases)
    summary["fixed_cases"] = sum(1 for c in m.cases if c["fixes"])
    return {
        "name": f"prepared:{m.root.name}",
        "path": str(m.root),
        "kind": "prepared",
        "dims": int(m.preprocessing.get("dims", 3)),
        "size_key": size_key,
        "labels": {str(k): v for k, v in m.labels.items()},
        "label_values": {str(k): v for k, v in m.label_values.items()},  # class index -> source value
        "preprocessing": m.preprocessing,
        "summary": summary,
        "cases": cases,
        "problems": [],
    }


def _fmt_range(s: dict | None, unit: str = "", digits: int = 4) -> str:
    if s is None:
        return "-"
    if isinstance(s["min"], list):
        f = lambda v: "x".join(f"{x:.{digits}g}" for x in v)  # noqa: E731
    else:
        f = lambda v: f"{v:.{digits}g}"  # noqa: E731
    return f"{f(s['min'])} / {f(s['median'])} / {f(s['max'])}{unit}"


SIZE_UNITS = {"label_mm3": "mm3", "label_mm2": "mm2", "label_input_px": "input px"}


def format_report(result: dict[str, Any]) -> str:
    """A plain-text table per source."""
    lines = []
    for src in result["sources"]:
        s = src["summary"]
        size_key = src.get("size_key", "label_mm3")
        unit = SIZE_UNITS[size_key]
        pixels = "voxels" if src.get("dims", 3) == 3 else "pixels"
        spacing_unit = "input px" if size_key == "label_input_px" else "mm"
        lines.append(f"== {src['name']} ({src['kind']}: {src['path']})")
        rows = [
            ("cases", str(s["n_cases"])),
            ("shape min/median/max", _fmt_range(s["shape"])),
            *([("channels", ", ".join(map(str, s["channels"])))] if s.get("channels") else []),
            *[(f"channel {i} intensity min..max (medians)", f"{_fmt_median(c['min'])} .. {_fmt_median(c['max'])}")
              for i, c in enumerate(s.get("intensity_per_channel", []))],
            (f"spacing {spacing_unit} min/median/max", _fmt_range(s["spacing"])),
            ("per-case intensity min (min/median/max)", _fmt_range(s["intensity_min"])),
            ("per-case intensity max (min/median/max)", _fmt_range(s["intensity_max"])),
        ]
        size_key = src.get("size_key", "label_mm3")
        unit = SIZE_UNITS[size_key]
        pixels = "voxels" if src.get("dims", 3) == 3 else "pixels"
        for k in s["label_voxels"]:
            name = src["labels"].get(k, "") if src.get("labels") else ""
            value = (src.get("label_values") or {}).get(k, int(k))
            name += f" (source value {value})" if value != int(k) else ""
            rows.append((f"label {k}{' ' + name if name else ''} {pixels}", _fmt_range(s["label_voxels"][k], digits=6)))
            if size_key != "label_input_px":  # the same numbers as the pixel counts
                rows.append((f"label {k}{' ' + name if name else ''} {unit}", _fmt_range(s[size_key][k], digits=6)))
        rows.append(("empty masks", str(s["empty_masks"])))
        if "pixel_types" in s:
            if "distinct_sizes" in s:
                rows.append(("distinct sizes", str(s["distinct_sizes"])))
            rows.append(("pixel types", ", ".join(f"{k} {v}" for k, v in s["pixel_types"].items())))
            rows.append(("colour images", str(s["color_images"])))
            rows.append(("masks read as", ", ".join(f"{k} {v}" for k, v in s["mask_rules"].items()) or "-"))
            rows.append(("JPEG mask mid-grey pixels", str(s["jpeg_midgrey_pixels"])))
        if "distinct_original_sizes" in s:
            rows.append(("distinct original sizes", str(s["distinct_original_sizes"])))
        if src["kind"] == "prepared":
            pre = src["preprocessing"]
            if pre.get("dims") == 2:
                rows.append(("2D input / channels / bit depth",
                             f"{pre.get('input')} / {pre.get('channels')} / {pre.get('bit_depth')}"))
            rows.append(("train / val / test", " / ".join(str(v) for v in s["splits"].values())))
            rows.append(("folds (cases each)", ", ".join(map(str, s["folds"])) or "none"))
            rows.append(("cases losing foreground to crop", f"{s['foreground_lost_cases']} "
                         f"({s['foreground_lost_voxels']} voxels)"))
            rows.append(("cases with fixes", str(s["fixed_cases"])))
        width = max(len(r[0]) for r in rows)
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        if src["problems"]:
            lines.append(f"  problems ({len(src['problems'])}):")
            lines += [f"    - {p}" for p in src["problems"][:20]]
            if len(src["problems"]) > 20:
                lines.append(f"    ... and {len(src['problems']) - 20} more (see analysis.json)")
    return "\n".join(lines)


def _write_plots(result: dict[str, Any], folder: Path) -> list[str]:
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    written = []
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    x0 = 0
    for src in result["sources"]:
        rows = [c for c in src["cases"].values() if c["intensity"]["min"] is not None]
        xs = np.arange(x0, x0 + len(rows))
        ax.vlines(xs, [r["intensity"]["min"] for r in rows], [r["intensity"]["max"] for r in rows],
                  label=f"{src['name']} (n={len(rows)})")
        x0 += len(rows)
    ax.set_xlabel("case")
    ax.set_ylabel("intensity min..max (raw units)")
    ax.set_title("Intensity range per case")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(folder / "intensity_range.png", dpi=100)
    written.append("intensity_range.png")

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    units = set()
    for src in result["sources"]:
        size_key = src.get("size_key", "label_mm3")
        units.add(SIZE_UNITS[size_key])
        for k in src["summary"][size_key]:
            vols = [c[size_key].get(k, 0.0) for c in src["cases"].values()]
            ax.hist(vols, bins=30, alpha=0.5, label=f"{src['name']} label {k} (n={len(vols)})")
    ax.set_xlabel(f"label size ({', '.join(sorted(units))})")
    ax.set_ylabel("cases")
    ax.set_title("Label volumes")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(folder / "label_volumes.png", dpi=100)
    written.append("label_volumes.png")

    n_axes = max((len(c["shape"]) for src in result["sources"] for c in src["cases"].values()), default=3)
    fig = Figure(figsize=(3 * n_axes, 3))
    axes = fig.subplots(1, n_axes)
    for i, axis_name in enumerate("DHW"[-n_axes:]):
        for src in result["sources"]:
            sizes = [c["shape"][i] for c in src["cases"].values() if len(c["shape"]) == n_axes]
            axes[i].hist(sizes, bins=20, alpha=0.5, label=src["name"])
        axes[i].set_xlabel(f"{axis_name} ({'voxels' if n_axes == 3 else 'pixels'})")
    axes[0].set_ylabel("cases")
    axes[0].legend(fontsize="small")
    fig.suptitle("Shapes")
    fig.tight_layout()
    fig.savefig(folder / "shapes.png", dpi=100)
    written.append("shapes.png")
    return written


def analyze_dataset(
    inputs: list[str | os.PathLike], out_dir: str | os.PathLike | None = None, overwrite: bool = False,
    print_report: bool = True,
    mask_suffix: str | None = None,
) -> dict[str, Any]:
    """Summarise each source of `inputs`, print a table per source, optionally write files.

    Args:
        inputs: raw dataset folders / datalist files (as for `prepare`), or prepared folders.
        out_dir: if given, write ``analysis.json`` and PNG plots there (atomically).
        overwrite: replace an existing `out_dir`.
        print_report: print the plain-text table.
        mask_suffix: masks named ``<image name><mask_suffix>`` (as prepare's ``--mask-suffix``).

    Returns:
        ``{"sources": [{"name", "path", "kind", "dims", "size_key", "labels", "summary", "cases",
        "problems"}, ...]}``.

    Raises:
        UserError: when an input cannot be discovered, or `out_dir` overlaps an input or exists without
            `overwrite` (see `synthmed.fileio.check_output_folder`).
    """
    if out_dir is not None:
        check_output_folder(out_dir, kind="analyze", inputs=inputs, overwrite=overwrite)
    paths = [Path(p).expanduser().resolve() for p in inputs]
    prepared = [p for p in paths if p.is_dir() and (p / MANIFEST_NAME).is_file()]
    raw = [p for p in paths if p not in prepared]
    result: dict[str, Any] = {"sources": []}
    if raw:
        for src in discover_sources(raw, mask_suffix):
            cases, problems = {}, []
            analyze_case = analyze_raw_case if src.dims == 3 else analyze_raw_case_2d
            size_key = "label_mm3" if src.dims == 3 else "label_input_px"
            for rec in src.cases:
                stats, probs = analyze_case(rec.image_files, rec.label)
                problems += probs
                if stats is not None:
                    cases[rec.id] = stats
            result["sources"].append({
                "name": src.name,
                "path": str(src.path),
                "kind": src.kind,
                "dims": src.dims,
                "size_key": size_key,
                "labels": {str(k): v for k, v in src.labels.items()} if src.labels else None,
                "summary": _summarise(cases, size_key),
                "cases": cases,
                "problems": problems,
            })
    for p in prepared:
        result["sources"].append(_analyze_prepared(p))
    if print_report:
        print(format_report(result))
    if out_dir is not None:
        with atomic_directory(out_dir, kind="analyze", inputs=inputs, overwrite=overwrite) as tmp:
            result["plots"] = _write_plots(result, tmp)
            atomic_write_json(tmp / "analysis.json", result)
    return result
