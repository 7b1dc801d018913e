"""Create and read a visual Turing test study folder.

Layout of a study folder (``synthmed vtt create --out STUDY``)::

    STUDY/study.json        public configuration: study id, item ids (shuffled), render files, sizes
    STUDY/renders/<r>.png   one PNG per item, view and layer, named by 128 random bits
    STUDY/key.json          the answer key (origin, source set and case of every item); mode 0600,
                            never served
    STUDY/vtt.sqlite3       raters, token hashes, item orders, sessions and ratings (WAL mode)
    STUDY/analysis/         written by ``synthmed vtt analyze``

Selection: ``n / 2`` real cases drawn from ``MANIFEST[:split]`` and ``n / 2`` synthetic cases drawn
from the synthetic set folder(s) (shared as evenly as possible between several sets), in an order
shuffled with the seed. Item ids and render file names come from `secrets`, so they carry nothing
about the origin (nor about the seed); the selection and order depend only on the seed and the inputs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import synthmed
from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import Manifest, parse_real_spec
from synthmed.errors import UserError, format_problems
from synthmed.fileio import atomic_directory, atomic_write_json, check_output_folder, refuse_partial_input
from synthmed.sample.card import load_card
from synthmed.sample.synthetic_set import load_synthetic_set, synthetic_case_files
from synthmed.sample.postprocess import images_to_network_units, intensity_range
from synthmed.vtt import db
from synthmed.vtt.render import INTERPOLATIONS, LAYERS, RenderOptions, render_item, view_planes, views_for
from synthmed.vtt.tokens import STUDY_ID_PATTERN, new_study_id

STUDY_FORMAT, KEY_FORMAT, STUDY_VERSION = "synthmed-vtt-study", "synthmed-vtt-key", 1
STUDY_FILE, KEY_FILE, RENDERS_DIR, DB_FILE, ANALYSIS_DIR = "study.json", "key.json", "renders", "vtt.sqlite3", "analysis"
ORIGINS = ("real", "synthetic")
RATER_ORDERS = ("per_rater", "shared")
ITEM_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
RENDER_FILE_PATTERN = re.compile(r"^[0-9a-f]{32}\.png$")
PANEL_SIZE_RANGE = (64, 2048)
VTT_CREATE_KIND, VTT_ANALYZE_KIND = "vtt create", "vtt analyze"  # commands named in the output markers


@dataclass
class ItemPool:
    """Candidate items of one origin: a real split or one synthetic set."""

    name: str  # e.g. "prepared:train" or the synthetic set's folder name
    origin: str  # "real" or "synthetic"
    images: np.ndarray  # [N, C, *S] in network units [-1, 1]
    masks: np.ndarray  # [N, *S] integer labels
    case_names: list[str]  # one per item: case id (real) or file case name (synthetic)


@dataclass(frozen=True)
class StudyOptions:
    n: int  # total items; n / 2 real and n / 2 synthetic
    seed: int = 0  # seed of the selection and the order
    window: tuple[float, float] | None = None  # display window in original units (None: the manifest's range)
    panel_size: int = 320  # pixels of the longest physical extent of a volume or image
    interpolation: str = "bilinear"  # image resampling: bilinear or nearest
    rater_order: str = "per_rater"  # per_rater: each rater gets their own seeded shuffle; shared: the study order
    overwrite: bool = False  # replace an existing study folder
    channel: int = 0  # multi-channel 3D images: the channel shown (e.g. 0 = FLAIR); its own window


@dataclass(frozen=True)
class Study:
    """A loaded study folder (see the module docstring)."""

    folder: Path
    study_id: str
    dims: int  # 2 or 3
    seed: int
    rater_order: str
    views: tuple[str, ...]
    view_sizes: dict[str, tuple[int, int]]  # view -> (height, width) in pixels
    item_ids: tuple[str, ...]  # in study order
    renders: dict[str, dict[str, dict[str, str]]] = field(repr=False)  # item -> view -> layer -> file name

    @property
    def db_path(self) -> Path:
        return self.folder / DB_FILE

    @property
    def renders_dir(self) -> Path:
        return self.folder / RENDERS_DIR

    @property
    def key_path(self) -> Path:
        return self.folder / KEY_FILE

    def render_path(self, item_id: str, view: str, layer: str) -> Path | None:
        """The render file of (item, view, layer), or None when there is none.

        The path is built only from a file name found in study.json (checked at load time), never
        from request text, and must lie directly in ``renders/``.
        """
        name = self.renders.get(item_id, {}).get(view, {}).get(layer)
        if name is None:
            return None
        path = self.renders_dir / name
        return path if path.parent == self.renders_dir and RENDER_FILE_PATTERN.match(path.name) else None


def _check_options(o: StudyOptions) -> None:
    problems = []
    if o.n < 2 or o.n % 2:
        problems.append(f"--n {o.n}: must be an even number >= 2 (n/2 real + n/2 synthetic items)")
    if o.window is not None and not o.window[1] > o.window[0]:
        problems.append(f"--window {o.window[0]:g} {o.window[1]:g}: HI must be greater than LO")
    if not PANEL_SIZE_RANGE[0] <= o.panel_size <= PANEL_SIZE_RANGE[1]:
        problems.append(f"--panel-size {o.panel_size}: must be within {PANEL_SIZE_RANGE[0]}..{PANEL_SIZE_RANGE[1]} pixels")
    if o.interpolation not in INTERPOLATIONS:
        problems.append(f"interpolation {o.interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
    if o.channel < 0:
        problems.append(f"--channel {o.channel}: must be >= 0")
    if o.rater_order not in RATER_ORDERS:
        problems.append(f"rater_order {o.rater_order!r}: expected one of {', '.join(RATER_ORDERS)}")
    if problems:
        raise UserError(format_problems("vtt create: bad options", problems))


def display_spacing(manifest: Manifest) -> tuple[float, ...]:
    """One display voxel size for every item of a study: the prepared spacing, else the median case spacing.

    Real cases that kept their own spacing would otherwise be drawn at other aspect ratios than the
    synthetic ones, which would give their origin away.
    """
    pre = manifest.preprocessing
    dims = int(pre.get("dims", 3))
    spacing = pre.get("spacing")
    if spacing is None:
        known = [c["spacing"] for c in manifest.cases if c.get("spacing") is not None and len(c["spacing"]) == dims]
        spacing = np.median(np.asarray(known, dtype=np.float64), axis=0).tolist() if known else [1.0] * dims
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != dims or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise UserError(f"{manifest.path}: preprocessing.spacing {list(spacing)}: expected {dims} positive numbers")
    return spacing


def network_window(manifest: Manifest, window: tuple[float, float] | None, channel: int = 0) -> tuple[float, float]:
    """The display window in network units: [-1, 1] (the manifest's range), or `window` given in original
    units (of `channel`, for multi-channel images)."""
    if window is None:
        return -1.0, 1.0
    lo, hi = intensity_range(manifest.preprocessing["intensity"], channel)
    return tuple(float((w - lo) / (hi - lo) * 2.0 - 1.0) for w in window)  # type: ignore[return-value]


def _real_pool(manifest: Manifest, split: str, n_wanted: int, rng: np.random.Generator) -> ItemPool:
    ids = manifest.split_ids(split)
    if len(ids) < n_wanted:
        raise UserError(f"--real {manifest.path}:{split} has {len(ids)} case(s); --n needs {n_wanted} real cases (n/2)")
    chosen = [ids[i] for i in sorted(rng.choice(len(ids), size=n_wanted, replace=False))]
    images, masks = load_arrays(manifest, chosen)
    return ItemPool(f"{manifest.root.name}:{split}", "real", images, masks, chosen)


def _synthetic_pools(manifest: Manifest, folders: list[Path], n_wanted: int, rng: np.random.Generator) -> list[ItemPool]:
    """Draw `n_wanted` synthetic items, shared as evenly as possible between `folders`."""
    shares = np.full(len(folders), n_wanted // len(folders))
    shares[rng.permutation(len(folders))[: n_wanted % len(folders)]] += 1
    shape = tuple(manifest.preprocessing["shape"])
    pools, names = [], set()
    for folder, share in zip(folders, shares):
        available = len(synthetic_case_files(folder))
        if available < share:
            raise UserError(f"--synthetic {folder} holds {available} pair(s); this study needs {share} from it")
        chosen = sorted(int(i) for i in rng.choice(available, size=int(share), replace=False))
        images, masks, case_names = load_synthetic_set(folder, shape, indices=chosen)  # only the chosen cases
        name = folder.name if folder.name not in names else f"{folder.name}#{len(names)}"
        names.add(name)
        pools.append(ItemPool(name, "synthetic", images_to_network_units(images, manifest.preprocessing["intensity"]),
                              masks, case_names))
    return pools


def shown_channel(manifest: Manifest, pools: list[ItemPool], channel: int) -> tuple[list[ItemPool], str | None]:
    """The pools with only `channel` of multi-channel images (manifests with per-channel intensity), and
    that channel's name; grey and RGB images are returned as they are (name None).

    Raises:
        UserError: `channel` is not one of the images' channels.
    """
    channels = manifest.preprocessing["intensity"].get("channels")
    if manifest.preprocessing["intensity"].get("mode") != "per_channel" or not channels:
        if channel:
            raise UserError(f"--channel {channel}: {manifest.path} has single-channel (or RGB) images")
        return pools, None
    if channel >= len(channels):
        raise UserError(f"--channel {channel}: the images have channels 0..{len(channels) - 1} "
                        f"({', '.join(str(c.get('name')) for c in channels)})")
    chosen = [ItemPool(p.name, p.origin, p.images[:, channel:channel + 1], p.masks, p.case_names) for p in pools]
    return chosen, str(channels[channel].get("name", channel))


def _check_pools(pools: list[ItemPool], dims: int) -> None:
    problems = []
    for pool in pools:
        if pool.images.ndim != dims + 2 or pool.masks.ndim != dims + 1:
            problems.append(f"{pool.name}: images {list(pool.images.shape)} and masks {list(pool.masks.shape)} "
                            f"are not {dims}D")
        elif pool.images.shape[2:] != pool.masks.shape[1:]:
            problems.append(f"{pool.name}: image shape {list(pool.images.shape[2:])} != mask shape {list(pool.masks.shape[1:])}")
    shapes = {p.masks.shape[1:] for p in pools}
    if len(shapes) > 1:
        problems.append(f"items differ in shape ({sorted(map(list, shapes))}); every item must have the prepared shape")
    channels = {p.images.shape[1] for p in pools}
    if len(channels) > 1:
        problems.append(f"items differ in channels ({sorted(channels)})")
    if problems:
        raise UserError(format_problems("vtt create: items cannot be rendered alike", problems))


def _display_image(images: np.ndarray, dims: int) -> np.ndarray:
    """The channels shown: 2D grayscale or RGB as they are; otherwise the first channel."""
    if dims == 2 and images.shape[1] in (1, 3):
        return images
    return images[:, :1]


def _write_private_json(path: Path, obj: Any) -> None:
    """Write JSON readable by the owner only (mode 0600 from the start), then rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=2) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def build_study(out: str | os.PathLike, pools: list[ItemPool], render: RenderOptions, options: StudyOptions,
                inputs: dict[str, Any], read_from: Sequence[str | os.PathLike] = ()) -> Path:
    """Shuffle the items of `pools`, render them alike and write the study folder `out`.

    Args:
        out: the study folder to create.
        pools: the selected items: one real pool and one or more synthetic pools.
        render: window, display spacing and size (the same for every item).
        options: seed, rater order, overwrite.
        inputs: provenance written to key.json only (paths of the manifest and the sets).
        read_from: the folders the pools were read from; `out` must not overlap them.

    Returns:
        `out` as a Path.
    """
    dims = pools[0].masks.ndim - 1
    _check_pools(pools, dims)
    entries = [(pool, i) for pool in pools for i in range(len(pool.case_names))]
    order = np.random.default_rng([options.seed, 1]).permutation(len(entries))
    entries = [entries[i] for i in order]
    study_id = new_study_id()
    item_ids = [secrets.token_hex(8) for _ in entries]
    view_sizes = {view: list(size) for view, (_, _, size) in view_planes(
        _display_image(pools[0].images[:1], dims)[0], pools[0].masks[0], render).items()}
    out = Path(out)
    with atomic_directory(out, kind=VTT_CREATE_KIND, inputs=read_from, overwrite=options.overwrite) as tmp:
        (tmp / RENDERS_DIR).mkdir()
        items, key_items = [], {}
        for item_id, (pool, i) in zip(item_ids, entries):  # written in shuffled order: file times say nothing
            pngs = render_item(_display_image(pool.images[i:i + 1], dims)[0], pool.masks[i], render)
            files = {view: {layer: f"{secrets.token_hex(16)}.png" for layer in LAYERS} for view in pngs}
            for view, layers in pngs.items():
                for layer, data in layers.items():
                    (tmp / RENDERS_DIR / files[view][layer]).write_bytes(data)
            items.append({"id": item_id, "renders": files})
            key_items[item_id] = {"origin": pool.origin, "set": pool.name, "case": pool.case_names[i]}
        atomic_write_json(tmp / STUDY_FILE, {
            "format": STUDY_FORMAT, "format_version": STUDY_VERSION, "synthmed_version": synthmed.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "study_id": study_id,
            "dims": dims, "n_items": len(items), "seed": options.seed, "rater_order": options.rater_order,
            "render": {"window_network_units": list(render.window), "window_original_units": inputs.get("window"),
                       "display_spacing": list(render.spacing), "panel_size": render.panel_size,
                       "interpolation": render.interpolation, "views": list(view_sizes), "view_sizes": view_sizes,
                       "channel": inputs.get("channel")},
            "items": items,
        })
        _write_private_json(tmp / KEY_FILE, {"format": KEY_FORMAT, "format_version": STUDY_VERSION, "study_id": study_id,
                                             "inputs": inputs, "items": key_items})
        db.create_database(tmp / DB_FILE, study_id, item_ids)
    return out


def create_study(real: str, synthetic: list[str | os.PathLike], out: str | os.PathLike, options: StudyOptions) -> Path:
    """`synthmed vtt create`: select, shuffle and render real and synthetic pairs into a study folder.

    Args:
        real: ``MANIFEST[:split]`` (split defaults to train).
        synthetic: one or more synthetic set folders written by `synthmed sample`.
        out: the study folder to create.
        options: see `StudyOptions`.

    Raises:
        UserError: bad options, unreadable inputs, a synthetic set without a card or half-written
            (``.partial``), too few cases, shapes that differ, or an `out` that overlaps an input or may not
            be replaced (see `synthmed.fileio.check_output_folder`). Nothing is written then.
    """
    _check_options(options)
    folders = [Path(s) for s in synthetic]
    if not folders:
        raise UserError("vtt create: give at least one --synthetic folder")
    if len({f.resolve() for f in folders}) != len(folders):
        raise UserError("vtt create: the same --synthetic folder is given twice")
    cards = _synthetic_cards(folders)
    manifest, split = parse_real_spec(real)
    read_from = [manifest.root, *folders]
    check_output_folder(out, kind=VTT_CREATE_KIND, inputs=read_from, overwrite=options.overwrite)
    rng = np.random.default_rng([options.seed, 0])
    pools = [_real_pool(manifest, split, options.n // 2, rng), *_synthetic_pools(manifest, folders, options.n // 2, rng)]
    pools, channel_name = shown_channel(manifest, pools, options.channel)
    render = RenderOptions(window=network_window(manifest, options.window, options.channel), spacing=display_spacing(manifest),
                           panel_size=options.panel_size, interpolation=options.interpolation)
    inputs = {"real": {"manifest": str(manifest.path), "manifest_sha256": manifest.sha256, "split": split},
              "synthetic": [{"name": p.name, "path": str(f.resolve()), "checkpoint_sha256": c["checkpoint"].get("sha256")}
                            for p, f, c in zip(pools[1:], folders, cards)],
              "window": list(options.window) if options.window else list(intensity_range(manifest.preprocessing["intensity"], options.channel)),
              "channel": None if channel_name is None else {"index": options.channel, "name": channel_name}}
    return build_study(out, pools, render, options, inputs, read_from=read_from)


def _synthetic_cards(folders: list[Path]) -> list[dict[str, Any]]:
    """The dataset card of every synthetic set: a set without one is half-written or of unknown origin.

    Raises:
        UserError: listing every folder that is a ``.partial`` leftover, has no ``card.json`` or an
            unreadable one.
    """
    cards, problems = [], []
    for folder in folders:
        try:
            refuse_partial_input(folder, "--synthetic")
            if not folder.is_dir():
                raise UserError(f"--synthetic {folder}: not a synthetic set (no such folder)")
            if not (folder / "card.json").is_file():
                raise UserError(f"--synthetic {folder}: no card.json, so where its pairs come from is unknown (a set "
                                "written by `synthmed sample` always has one; rerun sample if it was interrupted)")
            card = load_card(folder)
            if not isinstance(card.get("checkpoint"), dict):
                raise UserError(f"{folder / 'card.json'}: no \"checkpoint\" entry; not a card written by `synthmed sample`")
            cards.append(card)
        except UserError as e:
            problems.append(str(e))
    if problems:
        raise UserError(format_problems("vtt create: synthetic sets refused", problems))
    return cards


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found (is this a study folder made by `synthmed vtt create`?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read {what} ({e})") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object")
    return data


def _study_problems(data: dict, folder: Path) -> list[str]:
    problems = []
    if data.get("format") != STUDY_FORMAT or data.get("format_version") != STUDY_VERSION:
        return [f"format {data.get('format')!r} version {data.get('format_version')!r}, expected {STUDY_FORMAT!r} {STUDY_VERSION}"]
    if not STUDY_ID_PATTERN.match(str(data.get("study_id", ""))):
        problems.append(f"study_id {data.get('study_id')!r} is not 12 hex characters")
    views = data.get("render", {}).get("views", [])
    if data.get("dims") not in (2, 3) or list(views) != list(views_for(data.get("dims", 0))):
        problems.append(f"dims {data.get('dims')!r} with views {views!r}")
    if data.get("rater_order") not in RATER_ORDERS:
        problems.append(f"rater_order {data.get('rater_order')!r}: expected one of {', '.join(RATER_ORDERS)}")
    for item in data.get("items", []):
        if not ITEM_ID_PATTERN.match(str(item.get("id", ""))):
            problems.append(f"item id {item.get('id')!r} is not 16 hex characters")
        for view in views:
            for layer in LAYERS:
                name = str(item.get("renders", {}).get(view, {}).get(layer, ""))
                if not RENDER_FILE_PATTERN.match(name):
                    problems.append(f"item {item.get('id')}: render {view}/{layer} {name!r} is not a render file name")
                elif not (folder / RENDERS_DIR / name).is_file():
                    problems.append(f"item {item.get('id')}: {RENDERS_DIR}/{name} is missing")
    if not data.get("items"):
        problems.append("no items")
    return problems


def load_study(folder: str | os.PathLike) -> Study:
    """Read and check ``study.json`` of a study folder.

    Raises:
        UserError: a half-written (``.partial``) folder, missing or malformed study.json, or missing
            render files (every problem listed).
    """
    refuse_partial_input(folder, "--study")
    folder = Path(folder).expanduser().resolve()
    data = _read_json(folder / STUDY_FILE, "study.json")
    problems = _study_problems(data, folder)
    if problems:
        raise UserError(format_problems(f"{folder / STUDY_FILE}: not a usable study", problems))
    render = data["render"]
    return Study(
        folder=folder, study_id=data["study_id"], dims=data["dims"], seed=int(data["seed"]),
        rater_order=data["rater_order"], views=tuple(render["views"]),
        view_sizes={v: tuple(render["view_sizes"][v]) for v in render["views"]},
        item_ids=tuple(item["id"] for item in data["items"]),
        renders={item["id"]: item["renders"] for item in data["items"]},
    )


def load_key(study: Study) -> dict[str, dict[str, str]]:
    """The answer key: item id -> {"origin", "set", "case"}.

    Raises:
        UserError: key.json missing, of another study, or not covering every item.
    """
    data = _read_json(study.key_path, "key.json")
    if data.get("format") != KEY_FORMAT or data.get("study_id") != study.study_id:
        raise UserError(f"{study.key_path}: not the key of study {study.study_id} "
                        f"(format {data.get('format')!r}, study {data.get('study_id')!r})")
    items = data.get("items", {})
    problems = [f"item {i}: no entry" for i in study.item_ids if i not in items]
    problems += [f"item {i}: origin {e.get('origin')!r}" for i, e in items.items() if e.get("origin") not in ORIGINS]
    if problems:
        raise UserError(format_problems(f"{study.key_path}: incomplete answer key", problems))
    return items
