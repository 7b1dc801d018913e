"""2D images (PNG, JPEG, TIFF) for `prepare.prepare_dataset`: one prepared case per image/mask pair.

Output (the 2D conventions): ``OUT/cases/<id>.npz`` with ``image`` float32 [C,H,W] in [-1, 1]
(C = 1 grayscale, 3 RGB) and ``mask`` uint8 [H,W]; ``manifest.json`` whose ``preprocessing`` has
``dims: 2``, ``input: "images"``, ``shape: [H, W]``, ``channels``, ``bit_depth`` (8 or 16: the depth
synthetic PNGs are written with) and ``intensity``; case entries have ``spacing: [sy, sx]`` and
``affine: null``.

- read and checked by `images2d` (mask rules there: JPEG masks are thresholded at luminance > 127
  and refused when they do not cluster near 0 and 255; 0/255 PNG masks become 0/1);
- channels: 3 when any image has colour (grayscale images are then repeated over R, G, B), else 1;
  ``channels=1`` turns colour into luminance, ``channels=3`` repeats grayscale. Cases of several grey
  channel files (nnU-Net ``case_000N.png``, a datalist ``image`` list; `images2d.read_channel_files`)
  have C channels named by ``channel_names`` (or ``--modality A,B``), each mapped with its own range as
  below; the manifest then holds ``intensity: {"mode": "per_channel", "channels": [{"name", ...}]}``
  and ``modality`` as the list of names, as for 3D, and case entries per-channel ``lo``/``hi`` lists;
- intensity (linear to [-1, 1]): 8-bit images: the window 0..255; 16-bit (and other TIFF pixel
  types): the data's own range, min..max over all images (per channel file) (16-bit files often hold 10- or 12-bit
  data, which 0..65535 would squeeze into a sliver of [-1, 1]); a given ``window`` or
  ``intensity="percentile"`` (per image) overrides it. Synthetic PNGs map [-1, 1] back onto this
  range, at ``bit_depth`` 8 (8-bit input) or 16;
- shape: ``resize`` (default), ``pad_resize`` (pad to a square, then resize) or ``pad_crop`` (see
  `preprocess2d`); the original size of each image is kept in its case entry (``original_shape``),
  and ``spacing`` is the size of an output pixel in input pixels (``spacing_unit: "pixel"``);
- all images must have the same pixel type (8-bit, 16-bit, ...); every problem of every file is
  collected and raised together.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthmed.data.case_reader import (
    CaseReader,
    PreparedCase,
    SummaryText,
    declared_labels,
    intensity_entry,
    raw_files,
    shape_2d,
)
from synthmed.data.discover import CaseRecord, Source
from synthmed.data.images2d import (
    JPEG_MASK_THRESHOLD,
    JPEG_SUFFIXES,
    MAX_MIDGREY_FRACTION,
    MIDGREY_LEVELS,
    Image2D,
    ImagePair,
    check_image_pair,
    luminance,
    read_image_2d,
    read_size,
)
from synthmed.data.prepare_options import PrepareOptions
from synthmed.data.preprocess import intensity_range
from synthmed.data.preprocess2d import fit_to_shape
from synthmed.errors import UserError, format_problems


def _check_image_options(options: PrepareOptions) -> None:
    problems = []
    if options.spacing is not None:
        problems.append("--spacing resamples 3D volumes; 2D images are resized with --shape")
    if options.crop_to_image:
        problems.append("--crop-to-image is for 3D volumes")
    if options.crop != "foreground":
        problems.append(f"--crop {options.crop} is for 3D volumes and slices; 2D images are not cropped")
    if problems:
        raise UserError(format_problems("Invalid options for 2D images", problems))


def _common_size(records: list[CaseRecord]) -> tuple[int, int]:
    """The one size of all images (for a missing --shape), or a UserError listing the sizes."""
    sizes = Counter(s for s in (read_size(r.image) for r in records) if s is not None)
    if len(sizes) == 1:
        return next(iter(sizes))
    top = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(5))
    raise UserError(
        f"the images have {len(sizes)} different sizes (H x W: {top}{', ...' if len(sizes) > 5 else ''}); "
        f"pass --shape H W, and --shape-mode resize (default), pad_resize (keeps the aspect ratio) or pad_crop"
    )


def _data_ranges(records: list[CaseRecord], n_channels: int, progress: bool) -> list[tuple[float, float]]:
    """Min and max pixel value of each channel file position over all readable images (unreadable ones
    are reported later); one range for cases of one file."""
    lo, hi = np.full(n_channels, np.inf), np.full(n_channels, -np.inf)
    for rec in tqdm(records, desc="intensity range", unit="image", disable=not progress or None, leave=False):
        for c, path in enumerate(rec.image_files[:n_channels]):
            img = read_image_2d(path, [])
            if img is not None:
                lo[c], hi[c] = min(lo[c], float(img.pixels.min())), max(hi[c], float(img.pixels.max()))
    return [(0.0, 1.0) if not np.isfinite(a) else (float(a), float(b) if b > a else float(a) + 1.0)
            for a, b in zip(lo, hi)]


def _first_pixel_type(records: list[CaseRecord]) -> str | None:
    for rec in records:
        img = read_image_2d(rec.image, [])
        if img is not None:
            return img.pixel_type
    return None


def _image_intensity(
    records: list[CaseRecord], options: PrepareOptions, n_channels: int, progress: bool
) -> tuple[str, list[dict]]:
    """(mode, per channel the manifest intensity entry: the window, without percentile refs, {} for
    percentile); each channel file gets its own data range (16-bit and other pixel types)."""
    if options.intensity == "percentile":
        return "percentile", [{} for _ in range(n_channels)]
    if options.window is not None:
        lo, hi = options.window
        return "window", [{"mode": "window", "lo": float(lo), "hi": float(hi), "from": "--window"}] * n_channels
    if _first_pixel_type(records) in (None, "uint8"):
        return "window", [{"mode": "window", "lo": 0.0, "hi": 255.0, "from": "8-bit range"}] * n_channels
    return "window", [{"mode": "window", "lo": lo, "hi": hi, "from": "data range"}
                      for lo, hi in _data_ranges(records, n_channels, progress)]


def _to_unit_float32(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`intensity_to_unit` in float32 (exact enough for 16-bit levels, half the memory of float64)."""
    if not hi > lo:
        raise ValueError(f"intensity range needs hi > lo, got lo={lo}, hi={hi}")
    scale = np.float32(2.0 / (hi - lo))
    unit = (pixels.astype(np.float32) - np.float32(lo)) * scale - np.float32(1.0)
    return np.clip(unit, -1.0, 1.0, out=unit)


def _pixel_type_problem(types: dict[str, list[Path]]) -> list[str]:
    if len(types) <= 1:
        return []
    parts = ", ".join(f"{t} ({len(paths)}, e.g. {paths[0]})" for t, paths in sorted(types.items()))
    return [f"images mix pixel types: {parts}; convert them to one bit depth"]


STRAY_NAMED = 5  # masks named in the stray-values message; the rest are counted


def _stray_mask_problem(stray: list[tuple[Path, str]], n_masks: int) -> list[str]:
    """One problem naming (some of) the masks that look binary with stray values, or none."""
    if not stray:
        return []
    named = "; ".join(f"{path} ({why})" for path, why in stray[:STRAY_NAMED])
    more = f"; and {len(stray) - STRAY_NAMED} more" if len(stray) > STRAY_NAMED else ""
    return [f"{len(stray)} of {n_masks} masks look like binary masks with stray values (faint values or "
            f"JPEG-like edges) or hold too many values to be labels; each value would become a label: "
            f"{named}{more}. Pass "
            f"--mask-threshold T (label = value > T, e.g. 127) to binarise every mask, or --labels to declare "
            f"the values as labels"]


def _expand_gray_to_rgb(tmp: Path, entries: list[dict]) -> None:
    """Repeat the one channel of grayscale cases over R, G, B (the dataset has colour images)."""
    for e in entries:
        path = tmp / e["cache"]
        with np.load(path) as z:
            image, mask = z["image"], z["mask"]
        if image.shape[0] == 1:
            np.savez(path, image=np.repeat(image, 3, axis=0), mask=mask)


@dataclass
class MaskReadingTally:
    """How the masks were read, for the manifest's ``preprocessing.masks``."""

    rules: Counter = field(default_factory=Counter)  # mask rule -> masks read by it
    jpeg_pixels: int = 0  # pixels of JPEG masks
    jpeg_midgrey: int = 0  # of which mid-grey

    def add(self, pair: ImagePair) -> None:
        assert pair.mask is not None
        self.rules[pair.mask.rule] += 1
        if pair.record.label.suffix.lower() in JPEG_SUFFIXES:  # read at 127 or at --mask-threshold
            self.jpeg_pixels += pair.mask.labels.size
            self.jpeg_midgrey += pair.mask.midgrey_pixels

    def manifest_entry(self) -> dict:
        return {
            "rules": dict(sorted(self.rules.items())),
            "jpeg_threshold": JPEG_MASK_THRESHOLD,
            "jpeg_midgrey_levels": list(MIDGREY_LEVELS),
            "jpeg_max_midgrey_fraction": MAX_MIDGREY_FRACTION,
            "jpeg_mask_pixels": self.jpeg_pixels,
            "jpeg_midgrey_pixels": self.jpeg_midgrey,
        }


@dataclass
class ImageReader(CaseReader):
    """Checks 2D image/mask pairs and maps them to [-1, 1] at one shape; use `open_images` to make one."""

    options: PrepareOptions
    declared: dict[int, str] | None
    shape: tuple[int, int]
    shape_mode: str
    modality: str
    intensity_mode: str  # "window" or "percentile"
    windows: list[dict]  # per channel file the manifest's window entry (raw lo, hi mapped to -1, 1); {} for percentile
    n_pairs: int  # input pairs
    channel_names: list[str] | None = None  # cases of several grey channel files: their names; None: one file
    unit = "image"
    element = "pixel"
    pixel_types: dict[str, list[Path]] = field(default_factory=dict)  # pixel type -> images of that type
    masks: MaskReadingTally = field(default_factory=MaskReadingTally)
    stray_masks: list[tuple[Path, str]] = field(default_factory=list)  # (mask, why) that look binary with stray values
    any_color: bool = False
    n_prepared: int = 0
    n_empty: int = 0

    def check(self, record: CaseRecord) -> ImagePair:
        pair = check_image_pair(record, set(self.declared) if self.declared is not None else None,
                                self.options.mask_threshold)
        if not pair.problems:
            assert pair.image is not None and pair.mask is not None
            self.pixel_types.setdefault(pair.image.pixel_type, []).append(record.image)
            self.masks.add(pair)
            self._check_channel_count(pair)
            if pair.mask.stray and self.declared is None:  # declared labels: the values were checked against them
                self.stray_masks.append((record.label, pair.mask.stray))
        return pair

    def _check_channel_count(self, pair: ImagePair) -> None:
        assert pair.image is not None
        expected = len(self.channel_names) if self.channel_names else 0
        if pair.image.channel_files != expected:
            pair.problems.append(f"{pair.record.image}: {pair.image.channel_files or 1} channel file(s), other cases "
                                 f"{expected or 1} (every case needs the same channels)")

    def prepare(self, pair: ImagePair) -> list[PreparedCase]:
        if len(self.pixel_types) > 1 or self.stray_masks:  # refused at the end: only check the remaining pairs
            return []
        assert pair.image is not None and pair.mask is not None
        unit, lo, hi = self._to_unit(pair.image)
        self.any_color |= unit.shape[0] == 3
        fitted = fit_to_shape(unit, pair.mask.labels, self.shape, self.shape_mode)
        fields = {
            **raw_files(pair.record),
            "original_shape": list(pair.mask.labels.shape),
            "original_channels": pair.image.channel_files or (3 if pair.image.color else 1),
            "original_pixel_type": pair.image.pixel_type,
            "shape": list(self.shape),
            "spacing": fitted.spacing,
            "affine": None,
            "intensity": {"lo": lo, "hi": hi},
            "mask_rule": pair.mask.rule,
            "label_voxels": {},
            "foreground_lost_voxels": fitted.foreground_lost,
            "fixes": pair.mask.notes,
        }
        empty = not fitted.mask.any()
        self.n_prepared += 1
        self.n_empty += empty
        return [PreparedCase(pair.record.id, fitted.image, fitted.mask, fields, empty)]

    def _range(self, pixels: np.ndarray, channel: int) -> tuple[float, float]:
        """The raw (lo, hi) mapped to -1, 1: the percentiles of `pixels`, or the window of channel file `channel`."""
        if self.intensity_mode == "percentile":
            lo, hi = intensity_range(pixels, "percentile", (0.0, 1.0), self.options.percentiles)
            return float(lo), float(hi)
        return float(self.windows[channel]["lo"]), float(self.windows[channel]["hi"])

    def _channels_to_unit(self, img: Image2D) -> tuple[np.ndarray, list[float], list[float]]:
        """Channel files stacked [H,W,C] -> (float32 [C,H,W] in [-1, 1], lo and hi per channel)."""
        ranges = [self._range(img.pixels[..., c], c) for c in range(img.pixels.shape[-1])]
        unit = np.stack([_to_unit_float32(img.pixels[..., c], lo, hi) for c, (lo, hi) in enumerate(ranges)])
        return unit, [lo for lo, _ in ranges], [hi for _, hi in ranges]

    def _to_unit(self, img: Image2D) -> tuple[np.ndarray, float | list[float], float | list[float]]:
        """(image float32 [C,H,W] in [-1, 1], lo, hi) with the channel rule of ``options.channels``;
        channel files each with their own range (lo, hi: lists)."""
        if img.channel_files:
            return self._channels_to_unit(img)
        pixels = img.pixels
        if self.options.channels == 1 and img.color:
            pixels = luminance(pixels)
        lo, hi = self._range(pixels, 0)
        unit = _to_unit_float32(pixels, lo, hi)
        unit = unit[None] if unit.ndim == 2 else np.moveaxis(unit, -1, 0)
        if self.options.channels == 3 and unit.shape[0] == 1:
            unit = np.repeat(unit, 3, axis=0)
        return unit, lo, hi

    def dataset_problems(self) -> list[str]:
        problems = _pixel_type_problem(self.pixel_types) + _stray_mask_problem(self.stray_masks, self.n_pairs)
        if 0 < self.n_prepared == self.n_pairs and self.n_empty == self.n_prepared:
            problems.append(
                f"all {self.n_prepared} masks are empty after reading (mask rules: {dict(self.masks.rules)}); "
                f"check the mask files and their values"
            )
        return problems

    def _channel_intensity(self, entries: list[dict], channel: int | None) -> dict:
        """The manifest's intensity entry of one channel file (`channel`; None: cases of one file)."""
        if self.intensity_mode != "percentile":
            return self.windows[channel or 0]
        if channel is None:
            return intensity_entry("percentile", (0.0, 1.0), self.options.percentiles, entries)
        ranges = [{"intensity": {"lo": e["intensity"]["lo"][channel], "hi": e["intensity"]["hi"][channel]}}
                  for e in entries]
        return intensity_entry("percentile", (0.0, 1.0), self.options.percentiles, ranges)

    def _intensity_and_channels(self, tmp: Path, entries: list[dict]) -> tuple[dict, int, str | list[str]]:
        """(manifest intensity, channel count, modality): per channel for channel files, as for 3D."""
        if self.channel_names:
            per_channel = [{"name": name, **self._channel_intensity(entries, c)}
                           for c, name in enumerate(self.channel_names)]
            intensity = {"mode": "per_channel", "channels": per_channel}
            return intensity, len(self.channel_names), list(self.channel_names)
        channels = self.options.channels or (3 if self.any_color else 1)
        if channels == 3:
            _expand_gray_to_rgb(tmp, entries)
        return self._channel_intensity(entries, None), channels, self.modality

    def finish(self, tmp: Path, entries: list[dict]) -> dict:
        intensity, channels, modality = self._intensity_and_channels(tmp, entries)
        pixel_type = next(iter(self.pixel_types), "uint8")
        return {
            "dims": 2,
            "input": "images",
            "shape": list(self.shape),
            "shape_mode": self.shape_mode,
            "channels": channels,
            "bit_depth": 8 if pixel_type == "uint8" else 16,
            "pixel_type": pixel_type,
            "spacing": None,
            "spacing_unit": "pixel",
            "modality": modality,
            "intensity": intensity,
            "masks": {**self.masks.manifest_entry(), "threshold": self.options.mask_threshold},
        }

    def summary(self, n_empty: int) -> SummaryText:
        what = f"images, {'x'.join(map(str, self.shape))} {self.shape_mode}"
        return SummaryText(cases=f"2D cases ({what})", details=f"{n_empty} empty mask(s).")


def open_images(sources: list[Source], options: PrepareOptions, progress: bool) -> ImageReader:
    """The reader of the 2D images in `sources`; reads them once when the intensity range is their data range.

    Raises:
        UserError: options that do not apply to 2D images, images of different sizes without a
            ``shape``, conflicting labels.
    """
    _check_image_options(options)
    records = [c for s in sources for c in s.cases]
    shape = shape_2d(options, None) or _common_size(records)
    shape_mode = options.resolved_shape_mode(2)
    declared = declared_labels(sources, options)
    modality = options.modality or next((s.modality for s in sources if s.modality), None) or "image"
    names = _channel_names(sources, records, options, modality)
    mode, windows = _image_intensity(records, options, len(names) if names else 1, progress)
    return ImageReader(options, declared, shape, shape_mode, modality, mode, windows, len(records), names)


def _channel_names(sources: list[Source], records: list[CaseRecord], options: PrepareOptions,
                   modality: str) -> list[str] | None:
    """The names of the channel files of the cases (``--modality A,B``, else the sources' channel_names, else
    `modality` for each), None when cases are one file each.

    Raises:
        UserError: ``--channels`` (for one grey or RGB file) with channel files, or a --modality list of another length.
    """
    several = next((r for r in records if r.channel_files), None)
    if several is None:
        return None
    n = len(several.channel_files)
    if options.channels is not None:
        raise UserError(f"--channels {options.channels}: the cases are {n} grey channel files each (e.g. "
                        f"{several.channel_files[0]}); --channels is for one grey or RGB image per case")
    if options.modality and "," in options.modality:
        names = [m.strip() for m in options.modality.split(",")]
        if len(names) != n:
            raise UserError(f"--modality {options.modality}: {len(names)} names for images with {n} channels")
        return names
    declared = next((s.channel_names for s in sources if s.channel_names and len(s.channel_names) == n), None)
    return list(declared) if declared and not options.modality else [modality] * n
