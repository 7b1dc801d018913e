"""Find the image/mask pairs of one or more raw datasets ("sources").

Files are 3D NIfTI volumes (``.nii``, ``.nii.gz``) or 2D images (``.png``, ``.jpg``/``.jpeg``,
``.tif``/``.tiff``, any letter case). The kind of file decides the dimensionality of a source
(`Source.dims`); all inputs of one call must have the same.

Accepted inputs:
- an MSD or nnU-Net v2 folder: ``imagesTr/``, ``labelsTr/`` and ``dataset.json`` (optional for 2D).
  Image names are ``<case>.nii.gz`` (MSD; a 4D NIfTI holds its channels on the last axis) or
  ``<case>_0000.nii.gz … <case>_000N.nii.gz`` (nnU-Net v2, one file per channel), likewise ``.png``
  for 2D. ``channel_names`` (or MSD's ``modality``) names the channels. Labels are read from
  ``dataset.json`` in either form,
  ``{"0": "background", ...}`` (MSD) or ``{"background": 0, ...}`` (nnU-Net v2). The source name is
  ``dataset.json``'s ``"name"``.
- a folder holding ``images/`` and ``labels/`` (or ``masks/``), paired by file name without its
  suffix (an image may carry the ``_0000`` suffix; a 2D mask may carry ``_mask``, ``_seg``,
  ``_segmentation`` or ``_label``; image and mask may have different file types). The source name is
  the folder name. 2D images may sit in sub-folders (one per video sequence or patient), mirrored
  under the mask folder: the case id is then ``<sub-folder>__<name>`` and the sub-folder is the
  case's default group, so frames of one sequence never straddle splits.
- a datalist JSON file (MONAI style): ``{"labels": {...} (optional), "training": [{"image": rel
  (or [rel, rel, ...]: one 3D file per channel), "label": rel, "id"?, "source"?, "group"?}, ...]}``, paths relative to the JSON file. The source
  of an entry is its ``"source"``, else the JSON file's stem. ``"validation"`` and ``"testing"``
  lists are not read (prepare splits ``"training"`` itself); a warning names them and their counts.

Case ids come from file names. 2D file names often hold spaces or brackets (``benign (1).png``):
characters other than letters, digits, ``.``, ``_`` and ``-`` are replaced by ``_`` for 2D files
(3D ids with such characters are refused, as before).

Every problem (missing folder, unpaired file, duplicate case id, bad JSON) is collected and raised
as one `UserError`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from synthmed.errors import UserError, format_problems

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")  # compared in lower case
MASK_NAME_SUFFIXES = ("_mask", "_segmentation", "_seg", "_label")  # 2D masks named after their image
MASK_FOLDER_NAMES = ("labels", "masks")  # mask folder next to images/ (first found wins)
SOURCE_KINDS = ("msd", "folders", "datalist")
UNUSED_DATALIST_KEYS = ("validation", "testing")  # MONAI datalist lists that prepare does not read

log = logging.getLogger(__name__)
ID_PATTERN = r"[A-Za-z0-9._-]+"


@dataclass
class CaseRecord:
    """One raw image/mask pair."""

    id: str  # case id, unique over all inputs; names the cache file cases/<id>.npz
    source: str  # name of the source it came from
    image: Path  # absolute path of the image file
    label: Path  # absolute path of the mask file
    group: str | None = None  # group given by a datalist entry or a 2D sub-folder, else None
    dims: int = 3  # 3: NIfTI volume, 2: PNG/JPEG/TIFF image
    # every channel file, in channel order, when the image is several files (nnU-Net ``_000N``, a
    # datalist ``image`` list); `image` is then the first. Empty: `image` holds every channel.
    channel_files: list[Path] = field(default_factory=list)

    @property
    def image_files(self) -> list[Path]:
        """The image file(s) of the case, in channel order."""
        return self.channel_files or [self.image]


@dataclass
class Source:
    """One input: a dataset folder or a datalist file."""

    name: str
    path: Path  # absolute input path
    kind: str  # "msd" | "folders" | "datalist"
    labels: dict[int, str] | None = None  # declared labels, None when the input declares none
    modality: str | None = None  # modality from dataset.json, when given
    channel_names: list[str] | None = None  # dataset.json's channel_names / modality, in channel order
    cases: list[CaseRecord] = field(default_factory=list)
    dims: int = 3  # 3: NIfTI volumes, 2: PNG/JPEG/TIFF images


def strip_nifti_suffix(name: str) -> str | None:
    """`case.nii.gz` -> `case`; None when the name is not a NIfTI file name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def strip_data_suffix(name: str) -> tuple[str, int] | None:
    """`case.nii.gz` -> ("case", 3), `case.PNG` -> ("case", 2); None for other file names."""
    stem = strip_nifti_suffix(name)
    if stem is not None:
        return stem, 3
    lower = name.lower()
    for suffix in IMAGE_2D_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], 2
    return None


def safe_case_id(name: str) -> str:
    """`benign (1)` -> `benign_1`: runs of characters outside letters, digits, '.', '_', '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "case"


def _data_files(folder: Path, problems: list[str]) -> dict[str, tuple[Path, int]]:
    """Key -> (path, dims) of the image files in `folder`.

    NIfTI files are taken from `folder` itself; 2D images also from its sub-folders, keyed by their
    relative path without suffix (``seq1/frame001``). Hidden files (MSD's ``._x.nii.gz``) are skipped.
    """
    files: dict[str, tuple[Path, int]] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        found = strip_data_suffix(p.name)
        if found is None or (found[1] == 3 and len(rel.parts) > 1):
            continue
        key = "/".join([*rel.parts[:-1], found[0]])
        if key in files:
            problems.append(f"{p}: same name as {files[key][0].name} (one file per case name expected)")
            continue
        files[key] = (p.resolve(), found[1])
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


def declared_channel_names(raw: object) -> list[str] | None:
    """dataset.json's ``channel_names`` / ``modality`` ({"0": "FLAIR", "1": "T1w"}) in channel order;
    None when absent or not such a mapping."""
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        return [str(raw[k]) for k in sorted(raw, key=lambda k: int(k))]
    except (TypeError, ValueError):
        return None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # JSON is UTF-8, whatever the locale
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from e


def _image_key(key: str, label_keys: set[str]) -> tuple[str, int | None]:
    """(mask key, channel) of an image: nnU-Net's ``case_000N`` gives ("case", N); else (key, None)."""
    m = re.fullmatch(r"(.+)_(\d{4})", key)
    if m and m.group(1) in label_keys and key not in label_keys:
        return m.group(1), int(m.group(2))
    return key, None


def _group_channels(
    images: dict[str, tuple[Path, int]], label_keys: set[str], problems: list[str]
) -> dict[str, tuple[list[Path], int]]:
    """Case key -> (image files in channel order, dims): nnU-Net ``case_0000 … case_000N`` files of a
    case become its channels; a problem names a case whose channels are not 0..N-1 without gaps."""
    channels: dict[str, dict[int, tuple[Path, int]]] = {}
    for key, (path, dims) in images.items():
        case_key, channel = _image_key(key, label_keys)
        channels.setdefault(case_key, {})[0 if channel is None else channel] = (path, dims)
    by_case: dict[str, tuple[list[Path], int]] = {}
    for key, found in channels.items():
        if sorted(found) != list(range(len(found))):
            first = found[min(found)][0]
            problems.append(
                f"{first.parent / key}_XXXX: channel files {sorted(found)} found; expected 0..{len(found) - 1} "
                f"without gaps (nnU-Net names channels case_0000, case_0001, ...)"
            )
            continue
        by_case[key] = ([found[c][0] for c in sorted(found)], found[0][1])
    return by_case


def _mask_key(key: str, image_keys: set[str]) -> str:
    """A 2D mask's key with a ``_mask``-like suffix removed when that names an image."""
    if key in image_keys:
        return key
    for suffix in MASK_NAME_SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in image_keys:
            return key[: -len(suffix)]
    return key


def _case_id_and_group(key: str, dims: int) -> tuple[str, str | None]:
    if dims == 3:
        return key, None
    parts = key.split("/")
    group = safe_case_id(parts[0]) if len(parts) > 1 else None
    return "__".join(safe_case_id(p) for p in parts), group


def _pair_folder(
    image_dir: Path, label_dir: Path, source: str, problems: list[str]
) -> list[CaseRecord]:
    images = _data_files(image_dir, problems)
    labels_raw = _data_files(label_dir, problems)
    labels: dict[str, tuple[Path, int]] = {}
    for key, (path, dims) in labels_raw.items():
        mkey = _mask_key(key, set(images)) if dims == 2 else key
        if mkey in labels:  # e.g. both a.png and a_mask.png
            problems.append(f"{path}: second mask for {mkey!r} (also {labels[mkey][0].name})")
            continue
        labels[mkey] = (path, dims)
    by_case = _group_channels(images, set(labels), problems)
    cases = []
    for key in sorted(set(by_case) | set(labels)):
        if key not in labels:
            path, dims = by_case[key][0][0], by_case[key][1]
            expected = label_dir / (key + (".nii.gz" if dims == 3 else path.suffix))
            problems.append(f"{path}: image has no mask (expected {expected})")
        elif key not in by_case:
            problems.append(f"{labels[key][0]}: mask has no image in {image_dir}")
        else:
            (files, dims), (label, label_dims) = by_case[key], labels[key]
            if dims != label_dims:
                problems.append(f"{label}: mask is {label_dims}D but its image {files[0].name} is {dims}D")
                continue
            case_id, group = _case_id_and_group(key, dims)
            cases.append(CaseRecord(case_id, source, files[0], label, group, dims, files if len(files) > 1 else []))
    if not images and not labels_raw:
        problems.append(
            f"{image_dir}: no image files found (NIfTI .nii/.nii.gz, or 2D .png/.jpg/.jpeg/.tif/.tiff)"
        )
    return cases


def _source_dims(cases: list[CaseRecord], where: Path, problems: list[str]) -> int:
    """3 or 2, from the cases' file types; a problem when one input mixes them."""
    dims = sorted({c.dims for c in cases})
    if len(dims) > 1:
        n2 = sum(c.dims == 2 for c in cases)
        problems.append(
            f"{where}: mixes {len(cases) - n2} NIfTI volume(s) and {n2} 2D image(s); use one kind per dataset"
        )
    return dims[0] if dims else 3


def _discover_msd(path: Path, problems: list[str]) -> list[Source]:
    meta_path = path / "dataset.json"
    meta: dict = {}
    if meta_path.exists():
        raw = _read_json(meta_path)
        if not isinstance(raw, dict):
            raise UserError(f"{meta_path}: expected a JSON object, found {type(raw).__name__}")
        meta = raw
    name = str(meta.get("name") or path.name)
    labels = parse_labels(meta["labels"], str(meta_path)) if "labels" in meta else None
    channel_names = declared_channel_names(meta.get("modality", meta.get("channel_names")))
    modality = channel_names[0] if channel_names else None
    n_before = len(problems)
    for sub in ("imagesTr", "labelsTr"):
        if not (path / sub).is_dir():
            problems.append(f"{path / sub}: missing folder")
    if len(problems) > n_before:
        return []
    src = Source(name=name, path=path, kind="msd", labels=labels, modality=modality, channel_names=channel_names)
    src.cases = _pair_folder(path / "imagesTr", path / "labelsTr", name, problems)
    src.dims = _source_dims(src.cases, path, problems)
    if src.dims == 3 and src.cases and not meta_path.exists():
        problems.append(f"{meta_path}: missing (an MSD / nnU-Net folder needs dataset.json)")
    return [src]


def mask_folder(path: Path) -> Path | None:
    """The mask folder (``labels/`` or ``masks/``) of a folder with ``images/``, or None."""
    for name in MASK_FOLDER_NAMES:
        if (path / name).is_dir():
            return path / name
    return None


def _discover_folders(path: Path, problems: list[str]) -> list[Source]:
    src = Source(name=path.name, path=path, kind="folders")
    masks = mask_folder(path)
    assert masks is not None  # checked by the caller
    src.cases = _pair_folder(path / "images", masks, src.name, problems)
    src.dims = _source_dims(src.cases, path, problems)
    return [src]


def _discover_datalist(path: Path, problems: list[str]) -> list[Source]:
    raw = _read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("training"), list):
        raise UserError(f"{path}: a datalist needs a 'training' list of {{'image', 'label'}} entries")
    labels = parse_labels(raw["labels"], str(path)) if "labels" in raw else None
    channel_names = declared_channel_names(raw.get("channel_names", raw.get("modality")))
    sources: dict[str, Source] = {}
    for i, entry in enumerate(raw["training"]):
        where = f"{path}: training[{i}]"
        images = _datalist_images(entry)
        if images is None or not isinstance(entry.get("label"), str):
            problems.append(
                f"{where}: expected {{'image': str or a list of str (one file per channel), 'label': str}}, "
                f"found {entry!r}"
            )
            continue
        channel_files = [(path.parent / p).resolve() for p in images]
        image, label = channel_files[0], (path.parent / entry["label"]).resolve()
        missing = [p for p in (*channel_files, label) if not p.is_file()]
        for p in missing:
            problems.append(f"{where}: file not found: {p}")
        kinds = [strip_data_suffix(p.name) for p in (*channel_files, label)]
        if len(channel_files) > 1 and any(k is not None and k[1] == 2 for k in kinds):
            problems.append(f"{where}: an image list (one file per channel) is for 3D NIfTI volumes")
            continue
        kinds = [kinds[0], kinds[-1]]
        for p, kind in zip((image, label), kinds):
            if kind is None:
                problems.append(
                    f"{where}: {p.name} is neither a NIfTI file (.nii, .nii.gz) nor a 2D image "
                    f"(.png, .jpg, .jpeg, .tif, .tiff)"
                )
        if missing or None in kinds:
            continue
        dims = kinds[0][1]  # type: ignore[index]
        if kinds[1][1] != dims:  # type: ignore[index]
            problems.append(f"{where}: image {image.name} and mask {label.name} are not both 2D or both 3D")
            continue
        stem = kinds[0][0]  # type: ignore[index]
        case_id = str(entry.get("id") or (stem if dims == 3 else safe_case_id(stem)))
        src_name = str(entry.get("source") or path.stem)
        group = entry.get("group")
        src = sources.setdefault(src_name, Source(name=src_name, path=path, kind="datalist", labels=labels,
                                                  channel_names=channel_names))
        src.cases.append(
            CaseRecord(case_id, src_name, image, label, None if group is None else str(group), dims,
                       channel_files if len(channel_files) > 1 else [])
        )
    if not raw["training"]:
        problems.append(f"{path}: 'training' list is empty")
    _warn_unused_lists(path, raw)
    for src in sources.values():
        src.dims = _source_dims(src.cases, path, problems)
    return list(sources.values())


def _datalist_images(entry: object) -> list[str] | None:
    """A datalist entry's image file(s): ``"image": str`` or ``"image": [str, ...]`` (one per channel)."""
    if not isinstance(entry, dict):
        return None
    image = entry.get("image")
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and image and all(isinstance(p, str) for p in image):
        return image
    return None


def _warn_unused_lists(path: Path, raw: dict) -> dict[str, int]:
    """Warn (one line) that a datalist's 'validation' / 'testing' entries are not used; {key: entries}."""
    unused = {k: len(raw[k]) if isinstance(raw[k], list) else 1 for k in UNUSED_DATALIST_KEYS if raw.get(k)}
    if unused:
        listed = " and ".join(f"{k!r} ({n} entr{'y' if n == 1 else 'ies'})" for k, n in unused.items())
        log.warning(
            "%s: %s not used: prepare reads only 'training' and makes its own train/val/test split from it "
            "(--test-fraction, --val-fraction); move entries into 'training' to include them", path, listed,
        )
    return unused


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
        elif path.is_dir() and (path / "images").is_dir() and mask_folder(path) is not None:
            sources += _discover_folders(path, problems)
        else:
            problems.append(
                f"{path}: unknown input layout; expected an MSD/nnU-Net folder (imagesTr/, labelsTr/, "
                f"dataset.json), a folder with images/ and labels/ (or masks/), or a datalist .json file"
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
            if not re.fullmatch(ID_PATTERN, case.id):
                problems.append(
                    f"{case.image}: case id {case.id!r} has characters other than letters, digits, '.', '_', '-'"
                )
    names = [s.name for s in sources]
    for name in sorted({n for n in names if names.count(n) > 1}):
        paths = ", ".join(str(s.path) for s in sources if s.name == name)
        problems.append(f"source name {name!r} is used by several inputs ({paths})")
    dims = {s.dims for s in sources if s.cases}
    if len(dims) > 1:
        problems.append(
            "inputs mix 3D NIfTI volumes ("
            + ", ".join(str(s.path) for s in sources if s.dims == 3 and s.cases)
            + ") and 2D images ("
            + ", ".join(str(s.path) for s in sources if s.dims == 2 and s.cases)
            + "); prepare them separately"
        )
    if not problems and not any(s.cases for s in sources):
        problems.append("no cases found in " + ", ".join(str(Path(p)) for p in inputs))
    if problems:
        raise UserError(format_problems("Cannot read the input datasets", problems))
    return sources
