"""Find the image/mask pairs of one or more raw datasets ("sources").

Files are 3D volumes (NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``, MetaImage
``.mha``/``.mhd``, or a DICOM series: a folder of ``.dcm`` files, one folder per series) or 2D images (``.png``, ``.jpg``/``.jpeg``,
``.tif``/``.tiff``, any letter case). The kind of file decides the dimensionality of a source
(`Source.dims`); all inputs of one call must have the same.

Accepted inputs:
- an MSD or nnU-Net v2 folder: ``imagesTr/``, ``labelsTr/`` and ``dataset.json`` (optional for 2D).
  Image names are ``<case>.nii.gz`` (MSD; a 4D NIfTI holds its channels on the last axis) or
  ``<case>_0000.nii.gz … <case>_000N.nii.gz`` (nnU-Net v2, one file per channel), likewise ``.png``
  for 2D. ``channel_names`` (or MSD's ``modality``) names the channels. Labels are read from
  ``dataset.json`` in either form,
  ``{"0": "background", ...}`` (MSD) or ``{"background": 0, ...}`` (nnU-Net v2). The source name is
  ``dataset.json``'s ``"name"``. ``imagesTs/`` with ``labelsTs/`` are cases given the test split.
- a folder holding ``images/`` and ``labels/`` (or ``masks/``), paired by file name without its
  suffix (an image may carry the ``_0000`` suffix; a 2D mask may carry ``_mask``, ``_seg``,
  ``_segmentation`` or ``_label``, or the ``mask_suffix`` given; image and mask may have different
  file types). The source name is the folder name. 2D images may sit in sub-folders (one per video
  sequence or patient), mirrored under the mask folder: the case id is then ``<sub-folder>__<name>``
  and the sub-folder is the case's default group, so frames of one sequence never straddle splits.
- with a ``mask_suffix`` (``--mask-suffix _Mask``), also one folder holding both, ``000_HC.png``
  with ``000_HC_Mask.png``.
- a datalist JSON file (MONAI style): ``{"labels": {...} (optional), "channel_names": {"0": "FLAIR",
  ...} (optional), "training": [{"image": rel (or [rel, rel, ...]: one file per channel), "label":
  rel, "id"?, "source"?, "group"?}, ...], "validation": [...]?, "testing": [...]?}``, paths
  relative to the JSON file (a DICOM series: its folder). The source of an entry is its
  ``"source"``, else the JSON file's stem. Entries of ``"validation"`` and ``"testing"`` are given
  that split (see `given_splits`). An entry without ``"id"`` gets one from its path: the file name
  without suffix, else (names repeat, as in BraTS-like sets) its folder, else folders and file name.

Case ids come from file names (a DICOM series: its folder name). 2D file names often hold spaces or
brackets (``benign (1).png``): characters other than letters, digits, ``.``, ``_`` and ``-`` are
replaced by ``_`` for 2D files and for folder names made into ids (3D file ids with such characters
are refused, as before).

Every problem (missing folder, unpaired file, duplicate case id, bad JSON) is collected and raised
as one `UserError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from synthmed.data.volume_io import is_dicom_folder, strip_itk_suffix
from synthmed.errors import UserError, format_problems

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")  # compared in lower case
MASK_NAME_SUFFIXES = ("_mask", "_segmentation", "_seg", "_label")  # 2D masks named after their image
MASK_FOLDER_NAMES = ("labels", "masks")  # mask folder next to images/ (first found wins)
SOURCE_KINDS = ("msd", "folders", "folder", "datalist")  # folder: images and masks together

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
    dims: int = 3  # 3: volume (NIfTI, NRRD, MetaImage, DICOM folder), 2: PNG/JPEG/TIFF image
    given_split: str | None = None  # "val" | "test" from a datalist list or imagesTs; None: the seeded split
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
    kind: str  # one of SOURCE_KINDS
    labels: dict[int, str] | None = None  # declared labels, None when the input declares none
    modality: str | None = None  # modality from dataset.json, when given
    channel_names: list[str] | None = None  # dataset.json's channel_names / modality, in channel order
    cases: list[CaseRecord] = field(default_factory=list)
    dims: int = 3  # 3: volumes, 2: PNG/JPEG/TIFF images
    id_note: str | None = None  # how case ids were made when the input gave none, for the summary


def strip_nifti_suffix(name: str) -> str | None:
    """`case.nii.gz` -> `case`; None when the name is not a NIfTI file name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def strip_data_suffix(name: str) -> tuple[str, int] | None:
    """`case.nii.gz` or `case.nrrd` -> ("case", 3), `case.PNG` -> ("case", 2); None for other file names."""
    stem = strip_nifti_suffix(name) or strip_itk_suffix(name)
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

    3D files are taken from `folder` itself, a DICOM series is a sub-folder of `folder` (keyed by its
    name); 2D images also from its sub-folders, keyed by their relative path without suffix
    (``seq1/frame001``). Hidden files (MSD's ``._x.nii.gz``) are skipped.
    """
    files: dict[str, tuple[Path, int]] = {}
    dicom = {p.name for p in folder.iterdir() if not p.name.startswith(".") and is_dicom_folder(p)}
    for name in sorted(dicom):
        files[name] = ((folder / name).resolve(), 3)
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or rel.parts[0] in dicom:
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


def _mask_key(key: str, image_keys: set[str], dims: int, mask_suffix: str | None) -> str:
    """A mask's key without the given `mask_suffix` (2D: also a ``_mask``-like suffix naming an image)."""
    if key in image_keys:
        return key
    if mask_suffix and key.endswith(mask_suffix) and len(key) > len(mask_suffix):
        return key[: -len(mask_suffix)]
    for suffix in MASK_NAME_SUFFIXES if dims == 2 else ():
        if key.endswith(suffix) and key[: -len(suffix)] in image_keys:
            return key[: -len(suffix)]
    return key


def _case_id_and_group(key: str, dims: int) -> tuple[str, str | None]:
    if dims == 3:
        return key, None
    parts = key.split("/")
    group = safe_case_id(parts[0]) if len(parts) > 1 else None
    return "__".join(safe_case_id(p) for p in parts), group


UNPAIRED_SHOWN = 3  # unpaired images (and masks) named in the one pairing problem


def _suffix_hint(images: list[str], masks: list[str]) -> str:
    """' (here --mask-suffix X would pair N)' when unpaired mask names extend unpaired image names."""
    found: dict[str, int] = {}
    image_set = set(images)
    for mask in masks:
        for cut in range(len(mask) - 1, 0, -1):
            if mask[:cut] in image_set:
                found[mask[cut:]] = found.get(mask[cut:], 0) + 1
                break
    if not found:
        return ""
    suffix = max(found, key=found.get)  # type: ignore[arg-type]
    return f" (here --mask-suffix {suffix} would pair {found[suffix]})"


def unpaired_problem(
    images: dict[str, Path], masks: dict[str, Path], image_dir: Path, label_dir: Path, dims: int
) -> str:
    """One problem for every unpaired file: a few examples of each kind, and how to pair them."""
    lines = [f"{len(images)} image(s) without a mask and {len(masks)} mask(s) without an image, e.g."]
    for key, path in list(images.items())[:UNPAIRED_SHOWN]:
        lines.append(f"{path}: image has no mask (expected {label_dir / (key + ('.nii.gz' if dims == 3 else path.suffix))})")
    for path in list(masks.values())[:UNPAIRED_SHOWN]:
        lines.append(f"{path}: mask has no image in {image_dir}")
    lines.append(
        "images and masks pair by file name (a 2D mask may end in _mask, _seg, _segmentation or _label); pair "
        f"names that differ by a suffix with --mask-suffix SUFFIX{_suffix_hint(list(images), list(masks))}, "
        "or list the pairs in a datalist JSON"
    )
    return "\n      ".join(lines)


def _pair_folder(
    image_dir: Path, label_dir: Path, source: str, problems: list[str], mask_suffix: str | None = None
) -> list[CaseRecord]:
    images = _data_files(image_dir, problems)
    return _pair_files(images, _data_files(label_dir, problems), image_dir, label_dir, source, problems, mask_suffix)


def _pair_files(
    images: dict[str, tuple[Path, int]], labels_raw: dict[str, tuple[Path, int]], image_dir: Path,
    label_dir: Path, source: str, problems: list[str], mask_suffix: str | None,
) -> list[CaseRecord]:
    labels: dict[str, tuple[Path, int]] = {}
    for key, (path, dims) in labels_raw.items():
        mkey = _mask_key(key, set(images), dims, mask_suffix)
        if mkey in labels:  # e.g. both a.png and a_mask.png
            problems.append(f"{path}: second mask for {mkey!r} (also {labels[mkey][0].name})")
            continue
        labels[mkey] = (path, dims)
    by_case = _group_channels(images, set(labels), problems)
    cases = []
    for key in sorted(set(by_case) & set(labels)):
        (files, dims), (label, label_dims) = by_case[key], labels[key]
        if dims != label_dims:
            problems.append(f"{label}: mask is {label_dims}D but its image {files[0].name} is {dims}D")
            continue
        case_id, group = _case_id_and_group(key, dims)
        cases.append(CaseRecord(case_id, source, files[0], label, group, dims,
                                channel_files=files if len(files) > 1 else []))
    lonely_images = {k: by_case[k][0][0] for k in sorted(set(by_case) - set(labels))}
    lonely_masks = {k: labels[k][0] for k in sorted(set(labels) - set(by_case))}
    if lonely_images or lonely_masks:
        dims = next(iter({**by_case, **labels}.values()))[1]
        problems.append(unpaired_problem(lonely_images, lonely_masks, image_dir, label_dir, dims))
    if not images and not labels_raw:
        problems.append(
            f"{image_dir}: no image files found (3D .nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd or DICOM series "
            f"folders, or 2D .png/.jpg/.jpeg/.tif/.tiff)"
        )
    return cases


def _pair_one_folder(path: Path, source: str, problems: list[str], mask_suffix: str) -> list[CaseRecord]:
    """Pairs in one folder holding both images and masks, the masks named ``<image><mask_suffix>``."""
    files = _data_files(path, problems)
    masks = {k: v for k, v in files.items() if k.endswith(mask_suffix)}
    images = {k: v for k, v in files.items() if k not in masks}
    return _pair_files(images, masks, path, path, source, problems, mask_suffix)


def _source_dims(cases: list[CaseRecord], where: Path, problems: list[str]) -> int:
    """3 or 2, from the cases' file types; a problem when one input mixes them."""
    dims = sorted({c.dims for c in cases})
    if len(dims) > 1:
        n2 = sum(c.dims == 2 for c in cases)
        problems.append(
            f"{where}: mixes {len(cases) - n2} 3D volume(s) and {n2} 2D image(s); use one kind per dataset"
        )
    return dims[0] if dims else 3


def _discover_msd(path: Path, problems: list[str], mask_suffix: str | None) -> list[Source]:
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
    src.cases = _pair_folder(path / "imagesTr", path / "labelsTr", name, problems, mask_suffix)
    src.cases += _test_cases(path, name, problems, mask_suffix)
    src.dims = _source_dims(src.cases, path, problems)
    if src.dims == 3 and src.cases and not meta_path.exists():
        problems.append(f"{meta_path}: missing (an MSD / nnU-Net folder needs dataset.json)")
    return [src]


def _test_cases(path: Path, name: str, problems: list[str], mask_suffix: str | None) -> list[CaseRecord]:
    """The cases of ``imagesTs``/``labelsTs`` (given the test split); none, with a warning, without labelsTs."""
    if not (path / "imagesTs").is_dir():
        return []
    if not (path / "labelsTs").is_dir():
        log.warning("%s: imagesTs/ has no labelsTs/ next to it, so its images are not used (no masks)", path)
        return []
    cases = _pair_folder(path / "imagesTs", path / "labelsTs", name, problems, mask_suffix)
    for case in cases:
        case.given_split = "test"
    return cases


def mask_folder(path: Path) -> Path | None:
    """The mask folder (``labels/`` or ``masks/``) of a folder with ``images/``, or None."""
    for name in MASK_FOLDER_NAMES:
        if (path / name).is_dir():
            return path / name
    return None


def _discover_folders(path: Path, problems: list[str], mask_suffix: str | None) -> list[Source]:
    src = Source(name=path.name, path=path, kind="folders")
    masks = mask_folder(path)
    assert masks is not None  # checked by the caller
    src.cases = _pair_folder(path / "images", masks, src.name, problems, mask_suffix)
    src.dims = _source_dims(src.cases, path, problems)
    return [src]


DATALIST_SPLITS = {"training": None, "validation": "val", "testing": "test"}  # list -> given split


def _datalist_record(path: Path, where: str, entry: object, problems: list[str]) -> tuple[CaseRecord, Path] | None:
    """The record of one datalist entry and its image path as listed (symbolic links not followed, for an
    id made from the path), or None with problems."""
    images = _datalist_images(entry)
    if images is None or not isinstance(entry.get("label"), str):  # type: ignore[union-attr]
        problems.append(f"{where}: expected {{'image': str or a list of str (one file per channel), 'label': str}}, "
                        f"found {entry!r}")
        return None
    assert isinstance(entry, dict)
    channel_files = [(path.parent / p).resolve() for p in images]
    image, label = channel_files[0], (path.parent / entry["label"]).resolve()
    missing = [p for p in (*channel_files, label) if not p.exists()]
    for p in missing:
        problems.append(f"{where}: file not found: {p}")
    kinds = [(p.name, 3) if is_dicom_folder(p) else strip_data_suffix(p.name) for p in (image, label)]
    listed = Path(os.path.abspath(path.parent / images[0]))
    for p, kind in zip((image, label), kinds):
        if kind is None and p not in missing:
            problems.append(
                f"{where}: {p.name} is neither a 3D volume (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, a DICOM "
                f"series folder) nor a 2D image (.png, .jpg, .jpeg, .tif, .tiff)"
            )
    if missing or None in kinds:
        return None
    dims = kinds[0][1]  # type: ignore[index]
    if kinds[1][1] != dims:  # type: ignore[index]
        problems.append(f"{where}: image {image.name} and mask {label.name} are not both 2D or both 3D")
        return None
    group = entry.get("group")
    record = CaseRecord(str(entry.get("id") or ""), str(entry.get("source") or path.stem), image, label,
                        None if group is None else str(group), dims,
                        channel_files=channel_files if len(channel_files) > 1 else [])
    return record, listed


def _path_ids(records: list[CaseRecord], listed: list[Path], taken: set[str]) -> tuple[list[str], str]:
    """Unique ids for datalist entries without one (from their `listed` image paths), and how they were
    made: the file name, else the folder (BraTS-like sets whose files all have one name), else folders
    and file name joined by '__'."""
    def candidate(record: CaseRecord, image: Path, level: int) -> str:
        folders = [safe_case_id(f) for f in image.parent.parts[1:]]
        stem = image.name if record.dims == 3 and image.is_dir() else (strip_data_suffix(image.name) or ("",))[0]
        name = stem if record.dims == 3 and level == 0 else safe_case_id(stem)
        if level == 0:
            return name
        return "__".join(folders[-level:]) if level == 1 else "__".join([*folders[-(level - 1):], name])

    depth = max((len(p.parent.parts) for p in listed), default=1)
    for level in range(depth + 1):
        ids = [candidate(r, p, level) for r, p in zip(records, listed)]
        if len(set(ids)) == len(ids) and not set(ids) & taken:
            how = ("file names", "folder names (the file names repeat)", "folder and file names")[min(level, 2)]
            return ids, how
    return [candidate(r, p, 0) for r, p in zip(records, listed)], "file names"  # duplicates reported later


def _discover_datalist(path: Path, problems: list[str]) -> list[Source]:
    raw = _read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("training"), list):
        raise UserError(f"{path}: a datalist needs a 'training' list of {{'image', 'label'}} entries")
    labels = parse_labels(raw["labels"], str(path)) if "labels" in raw else None
    channel_names = declared_channel_names(raw.get("channel_names", raw.get("modality")))
    found: list[tuple[CaseRecord, Path]] = []
    for key, split in DATALIST_SPLITS.items():
        entries = raw.get(key, [])
        if not isinstance(entries, list):
            problems.append(f"{path}: {key!r} must be a list of {{'image', 'label'}} entries")
            continue
        for i, entry in enumerate(entries):
            item = _datalist_record(path, f"{path}: {key}[{i}]", entry, problems)
            if item is not None:
                item[0].given_split = split
                found.append(item)
    if not raw["training"]:
        problems.append(f"{path}: 'training' list is empty")
    unnamed = [(r, listed) for r, listed in found if not r.id]
    ids, how = _path_ids([r for r, _ in unnamed], [s for _, s in unnamed], {r.id for r, _ in found if r.id})
    for (record, _), case_id in zip(unnamed, ids):
        record.id = case_id
    sources: dict[str, Source] = {}
    for record, _ in found:
        src = sources.setdefault(record.source, Source(record.source, path, "datalist", labels=labels,
                                                       channel_names=channel_names))
        src.cases.append(record)
    for src in sources.values():
        src.dims = _source_dims(src.cases, path, problems)
        n_own = sum(1 for r, _ in unnamed if r.source == src.name)
        src.id_note = f"ids of {n_own} of {len(src.cases)} entries made from their {how}" if n_own else None
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


def discover_sources(inputs: list[str | Path], mask_suffix: str | None = None) -> list[Source]:
    """Find the sources and their image/mask pairs in `inputs`.

    Args:
        inputs: dataset folders or datalist files (see the module docstring).
        mask_suffix: masks are named ``<image name><mask_suffix>`` (e.g. ``_Mask``); also lets a folder
            hold both images and masks.

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
            sources += _discover_msd(path, problems, mask_suffix)
        elif path.is_dir() and (path / "images").is_dir() and mask_folder(path) is not None:
            sources += _discover_folders(path, problems, mask_suffix)
        elif path.is_dir() and mask_suffix:
            src = Source(name=path.name, path=path, kind="folder")
            src.cases = _pair_one_folder(path, src.name, problems, mask_suffix)
            src.dims = _source_dims(src.cases, path, problems)
            sources.append(src)
        else:
            problems.append(
                f"{path}: unknown input layout; expected an MSD/nnU-Net folder (imagesTr/, labelsTr/, "
                f"dataset.json), a folder with images/ and labels/ (or masks/), a folder of images and masks "
                f"with --mask-suffix, or a datalist .json file"
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
            "inputs mix 3D volumes ("
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
