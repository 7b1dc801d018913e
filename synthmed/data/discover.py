"""Find the image/mask pairs of one or more raw datasets ("sources").

Accepted inputs (3D NIfTI, ``.nii`` or ``.nii.gz``):
- an MSD or nnU-Net v2 folder: ``imagesTr/``, ``labelsTr/`` and ``dataset.json``. Image names are
  ``<case>.nii.gz`` (MSD) or ``<case>_0000.nii.gz`` (nnU-Net v2, single channel only). Labels are read
  from ``dataset.json`` in either form, ``{"0": "background", ...}`` (MSD) or
  ``{"background": 0, ...}`` (nnU-Net v2). The source name is ``dataset.json``'s ``"name"``.
- a folder holding ``images/`` and ``labels/``, paired by file name (an image may carry the
  ``_0000`` suffix). The source name is the folder name.
- a datalist JSON file (MONAI style): ``{"labels": {...} (optional), "training": [{"image": rel,
  "label": rel, "id"?, "source"?, "group"?}, ...]}``, paths relative to the JSON file. The source
  of an entry is its ``"source"``, else the JSON file's stem.

Every problem (missing folder, unpaired file, duplicate case id, bad JSON) is collected and raised
as one `UserError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from synthmed.errors import UserError, format_problems

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SOURCE_KINDS = ("msd", "folders", "datalist")


@dataclass
class CaseRecord:
    """One raw image/mask pair."""

    id: str  # case id, unique over all inputs; names the cache file cases/<id>.npz
    source: str  # name of the source it came from
    image: Path  # absolute path of the image file
    label: Path  # absolute path of the mask file
    group: str | None = None  # group given by a datalist entry, else None


@dataclass
class Source:
    """One input: a dataset folder or a datalist file."""

    name: str
    path: Path  # absolute input path
    kind: str  # "msd" | "folders" | "datalist"
    labels: dict[int, str] | None = None  # declared labels, None when the input declares none
    modality: str | None = None  # modality from dataset.json, when given
    cases: list[CaseRecord] = field(default_factory=list)


def strip_nifti_suffix(name: str) -> str | None:
    """`case.nii.gz` -> `case`; None when the name is not a NIfTI file name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: Path) -> dict[str, Path]:
    """Stem -> path of the NIfTI files in `folder` (hidden files such as MSD's `._x.nii.gz` skipped)."""
    files = {}
    for p in sorted(folder.iterdir()):
        stem = strip_nifti_suffix(p.name)
        if stem is not None and not p.name.startswith(".") and p.is_file():
            files[stem] = p.resolve()
    return files


def parse_labels(raw: object, where: str) -> dict[int, str]:
    """Labels in MSD form {"0": "background"} or nnU-Net v2 form {"background": 0} -> {0: "background"}.

    Raises:
        UserError: when the mapping is neither form.
    """
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{where}: 'labels' must be a non-empty mapping, found {raw!r}")
    out: dict[int, str] = {}
    for k, v in raw.items():
        if isinstance(k, str) and re.fullmatch(r"\d+", k.strip()) and isinstance(v, str):
            out[int(k)] = v  # MSD: "0": "background"
        elif isinstance(v, int) and not isinstance(v, bool):
            out[v] = str(k)  # nnU-Net v2: "background": 0
        else:
            raise UserError(
                f"{where}: label entry {k!r}: {v!r} is neither MSD form ('0': 'background') "
                f"nor nnU-Net v2 form ('background': 0) (region-based labels are not supported)"
            )
    return dict(sorted(out.items()))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from e


def _pair_folder(
    image_dir: Path, label_dir: Path, source: str, problems: list[str]
) -> list[CaseRecord]:
    images = _nifti_files(image_dir)
    labels = _nifti_files(label_dir)
    by_case: dict[str, Path] = {}
    for stem, path in images.items():
        m = re.fullmatch(r"(.+)_(\d{4})", stem)
        if m and m.group(1) in labels:
            if m.group(2) != "0000":
                problems.append(
                    f"{path}: extra channel _{m.group(2)}; only single-channel images are supported"
                )
                continue
            stem = m.group(1)
        by_case[stem] = path
    cases = []
    for stem in sorted(set(by_case) | set(labels)):
        if stem not in labels:
            problems.append(f"{by_case[stem]}: image has no mask (expected {label_dir / (stem + '.nii.gz')})")
        elif stem not in by_case:
            problems.append(f"{labels[stem]}: mask has no image in {image_dir}")
        else:
            cases.append(CaseRecord(id=stem, source=source, image=by_case[stem], label=labels[stem]))
    if not images and not labels:
        problems.append(f"{image_dir}: no NIfTI files (.nii or .nii.gz) found")
    return cases


def _discover_msd(path: Path, problems: list[str]) -> list[Source]:
    meta_path = path / "dataset.json"
    meta: dict = {}
    if meta_path.exists():
        raw = _read_json(meta_path)
        if not isinstance(raw, dict):
            raise UserError(f"{meta_path}: expected a JSON object, found {type(raw).__name__}")
        meta = raw
    else:
        problems.append(f"{meta_path}: missing (an MSD / nnU-Net folder needs dataset.json)")
    name = str(meta.get("name") or path.name)
    labels = parse_labels(meta["labels"], str(meta_path)) if "labels" in meta else None
    modality = None
    mod = meta.get("modality", meta.get("channel_names"))
    if isinstance(mod, dict) and mod:
        modality = str(next(iter(mod.values())))
    for sub in ("imagesTr", "labelsTr"):
        if not (path / sub).is_dir():
            problems.append(f"{path / sub}: missing folder")
    if problems:
        return []
    src = Source(name=name, path=path, kind="msd", labels=labels, modality=modality)
    src.cases = _pair_folder(path / "imagesTr", path / "labelsTr", name, problems)
    return [src]


def _discover_folders(path: Path, problems: list[str]) -> list[Source]:
    src = Source(name=path.name, path=path, kind="folders")
    src.cases = _pair_folder(path / "images", path / "labels", src.name, problems)
    return [src]


def _discover_datalist(path: Path, problems: list[str]) -> list[Source]:
    raw = _read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("training"), list):
        raise UserError(f"{path}: a datalist needs a 'training' list of {{'image', 'label'}} entries")
    labels = parse_labels(raw["labels"], str(path)) if "labels" in raw else None
    sources: dict[str, Source] = {}
    for i, entry in enumerate(raw["training"]):
        where = f"{path}: training[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not isinstance(
            entry.get("label"), str
        ):
            problems.append(f"{where}: expected {{'image': str, 'label': str}}, found {entry!r}")
            continue
        image = (path.parent / entry["image"]).resolve()
        label = (path.parent / entry["label"]).resolve()
        missing = [p for p in (image, label) if not p.is_file()]
        for p in missing:
            problems.append(f"{where}: file not found: {p}")
        for p in (image, label):
            if strip_nifti_suffix(p.name) is None:
                problems.append(f"{where}: {p.name} is not a NIfTI file (.nii or .nii.gz)")
        if missing:
            continue
        case_id = str(entry.get("id") or strip_nifti_suffix(image.name) or image.stem)
        src_name = str(entry.get("source") or path.stem)
        group = entry.get("group")
        src = sources.setdefault(src_name, Source(name=src_name, path=path, kind="datalist", labels=labels))
        src.cases.append(
            CaseRecord(case_id, src_name, image, label, None if group is None else str(group))
        )
    if not raw["training"]:
        problems.append(f"{path}: 'training' list is empty")
    return list(sources.values())


def discover_sources(inputs: list[str | Path]) -> list[Source]:
    """Find the sources and their image/mask pairs in `inputs`.

    Raises:
        UserError: listing every problem (missing input, unknown layout, unpaired files, duplicate ids).
    """
    if not inputs:
        raise UserError("no input given: pass a dataset folder or a datalist JSON file")
    problems: list[str] = []
    sources: list[Source] = []
    for raw_path in inputs:
        path = Path(raw_path).expanduser().resolve()
        if not path.exists():
            problems.append(f"{path}: input not found")
        elif path.is_file() and path.suffix == ".json":
            sources += _discover_datalist(path, problems)
        elif path.is_dir() and ((path / "imagesTr").is_dir() or (path / "dataset.json").is_file()):
            sources += _discover_msd(path, problems)
        elif path.is_dir() and (path / "images").is_dir() and (path / "labels").is_dir():
            sources += _discover_folders(path, problems)
        else:
            problems.append(
                f"{path}: unknown input layout; expected an MSD/nnU-Net folder (imagesTr/, labelsTr/, "
                f"dataset.json), a folder with images/ and labels/, or a datalist .json file"
            )
    seen: dict[str, Path] = {}
    for src in sources:
        for case in src.cases:
            if case.id in seen:
                problems.append(
                    f"{case.image}: case id {case.id!r} already used by {seen[case.id]}; "
                    f"case ids must be unique over all inputs (give datalist entries an 'id')"
                )
            else:
                seen[case.id] = case.image
            if not re.fullmatch(r"[A-Za-z0-9._-]+", case.id):
                problems.append(
                    f"{case.image}: case id {case.id!r} has characters other than letters, digits, '.', '_', '-'"
                )
    names = [s.name for s in sources]
    for name in sorted({n for n in names if names.count(n) > 1}):
        paths = ", ".join(str(s.path) for s in sources if s.name == name)
        problems.append(f"source name {name!r} is used by several inputs ({paths})")
    if not problems and not any(s.cases for s in sources):
        problems.append("no cases found in " + ", ".join(str(Path(p)) for p in inputs))
    if problems:
        raise UserError(format_problems("Cannot read the input datasets", problems))
    return sources
