"""Read and check 2D image/mask files (PNG, JPEG, TIFF), reporting problems instead of fixing them.

Images: grayscale or RGB, 8-bit (PNG, JPEG, TIFF) or 16-bit (PNG, TIFF) unsigned integers, or
single-channel TIFF with other pixel types (signed integers, floats). An alpha channel is dropped
when fully opaque and refused otherwise; palette PNGs are expanded to RGB; an RGB image whose three
channels are equal is grayscale (`Image2D.color` is False).

Masks hold integer labels, read by these rules:
- PNG/TIFF (lossless): one channel, or RGB(A) with identical channels (one channel is kept); palette
  PNGs give their palette indices. A mask whose values are exactly {0, 255} (or {0, 65535} for 16-bit)
  is binary and becomes {0, 1}; any other values are kept as labels (at most 255). With a threshold
  (``--mask-threshold T``) every lossless mask is binary instead: label = value > T. A mask that looks
  like a binary mask with stray values (`stray_values`: at least `MIN_STRAY_DISTINCT` distinct values,
  the most common nonzero one >= 128, and the others on at most `MAX_STRAY_FRACTION` of the pixels,
  e.g. faint values and JPEG-like edges), or holding more than `MANY_MASK_VALUES` distinct values, is
  reported by its reader rather than read as many labels (unless labels are declared).
- JPEG (lossy, so noisy around 0 and 255): only binary masks. The gray level is the luminance
  ``L = 0.299 R + 0.587 G + 0.114 B`` (Pillow's "L" conversion, also for grayscale JPEGs) and
  **label = 1 where L > 127, else 0**. Pixels with 64 <= L <= 191 are "mid-grey": neither clearly
  background nor foreground. A mask with more than `MAX_MIDGREY_FRACTION` mid-grey pixels, or whose
  colour channels differ by more than `MAX_JPEG_CHANNEL_SPREAD` levels somewhere (a colour-coded
  mask), is refused naming the file: store such masks losslessly (PNG). With ``--mask-threshold T``
  the label is L > T instead and mid-grey pixels are accepted.

`check_image_pair` reads and checks one image/mask pair (the 2D counterpart of
`checks.load_checked_case`); `read_size` reads (H, W) from a file header only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthmed.data.discover import CaseRecord

JPEG_SUFFIXES = (".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
JPEG_MASK_THRESHOLD = 127  # JPEG mask label = luminance > 127
MIDGREY_LEVELS = (64, 191)  # JPEG mask luminance counted as mid-grey (inclusive)
MAX_MIDGREY_FRACTION = 0.01  # a JPEG mask with more mid-grey pixels than this is refused
MAX_JPEG_CHANNEL_SPREAD = 96  # larger R/G/B differences in a JPEG mask mean colour-coded labels
MAX_MASK_LABEL = 255  # masks are stored as uint8
MIN_STRAY_DISTINCT = 5  # a lossless mask with this many distinct values may be a binary one with stray values
MAX_STRAY_FRACTION = 0.05  # ... when the values other than 0 and its main foreground cover at most this share
MANY_MASK_VALUES = 10  # a lossless mask with more distinct values than this is refused unless labels are declared
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's RGB -> L


@dataclass
class Image2D:
    """The pixels of one 2D image file."""

    pixels: np.ndarray  # [H,W] or [H,W,3], as stored (uint8, uint16, or another dtype for TIFF)
    pixel_type: str  # "uint8", "uint16" or the numpy dtype name of other TIFF pixels
    color: bool  # RGB with channels that differ somewhere
    channel_files: int = 0  # several grey files stacked as [H,W,C] (nnU-Net _000N, a datalist list); 0: one file


@dataclass
class Mask2D:
    """The labels of one 2D mask file, and how they were read."""

    labels: np.ndarray  # uint8 [H,W]
    rule: str  # "labels", "binary_255" (0/255 -> 0/1), "threshold" (value > T) or "jpeg_threshold"
    midgrey_pixels: int = 0  # JPEG only: pixels with 64 <= L <= 191
    notes: list[str] = field(default_factory=list)
    stray: str | None = None  # "labels" masks only: why the values look like a binary mask with stray values


@dataclass
class ImagePair:
    """One 2D image/mask pair, read and checked; `image`/`mask` must not be used when `problems` is set."""

    record: CaseRecord
    image: Image2D | None = None
    mask: Mask2D | None = None
    problems: list[str] = field(default_factory=list)
    labels_seen: set[int] = field(default_factory=set)  # mask values, as read


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None for other files."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, data = series.axes, series.asarray()
        n_pages = len(tif.pages)
    if n_pages > 1 or axes not in ("YX", "YXS", "SYX"):
        raise ValueError(f"expected one 2D image (axes YX or YXS), found axes {axes} with shape {_shape(data.shape)}")
    return np.moveaxis(data, 0, -1) if axes == "SYX" else data


def _read_pil(path: Path, for_mask: bool) -> np.ndarray:
    header = _png_header(path)
    if header is not None and header[0] == 16 and header[1] in (2, 6):
        # Pillow reduces 16-bit RGB(A) PNGs to 8 bits on reading; refusing beats losing the range
        raise ValueError("16-bit RGB PNG is not supported (it would be read as 8-bit); save it as 16-bit TIFF")
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "P" and not for_mask:
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode == "I" or mode.startswith("I;16"):
            data = np.asarray(im)
            if data.min() < 0 or data.max() > 65535:
                raise ValueError(f"32-bit integer pixels outside 0..65535 (mode {mode})")
            return data.astype(np.uint16)
        return np.array(im)


def read_pixels(path: Path) -> np.ndarray:
    """The pixel array of a 2D file as stored ([H,W] or [H,W,C]); raises on unreadable files."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff(path)
    return _read_pil(path, for_mask=False)


def _drop_alpha(data: np.ndarray, path: Path, problems: list[str]) -> np.ndarray | None:
    """[H,W,2|4] -> [H,W,1|3] when the alpha channel is fully opaque, else None with a problem."""
    alpha = data[..., -1]
    opaque = np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else 1.0
    if not (alpha == opaque).all():
        problems.append(
            f"{path}: alpha channel is not fully opaque ({int((alpha != opaque).sum())} pixels); "
            f"flatten the image (no transparency) and save it again"
        )
        return None
    return data[..., :-1]


def _to_channels_last(data: np.ndarray, path: Path, problems: list[str]) -> np.ndarray | None:
    """[H,W] or [H,W,C] with C in 1..4 -> [H,W] or [H,W,3] (alpha dropped); None on problems."""
    if data.ndim == 3 and data.shape[-1] in (2, 4):
        data = _drop_alpha(data, path, problems)
        if data is None:
            return None
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2 or (data.ndim == 3 and data.shape[-1] == 3):
        return data
    problems.append(f"{path}: expected a 2D grayscale or RGB image, found array shape {_shape(data.shape)}")
    return None


def _pixel_type(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "uint8"
    return dtype.name


def read_image_2d(path: Path, problems: list[str]) -> Image2D | None:
    """Read one 2D image; None with problems appended when it is unusable.

    Checks: readable, 2D grayscale or RGB, opaque, finite (float TIFF), RGB only for 8/16-bit.
    """
    try:
        data = read_pixels(path)
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as e:
        # PIL and tifffile raise these for missing, truncated, or foreign files
        problems.append(f"{path}: unreadable image ({type(e).__name__}: {e})")
        return None
    data = _to_channels_last(np.asarray(data), path, problems)
    if data is None:
        return None
    if data.dtype == np.bool_:
        data = data.astype(np.uint8) * 255
    pixel_type = _pixel_type(data.dtype)
    if data.ndim == 3 and pixel_type not in ("uint8", "uint16"):
        problems.append(f"{path}: RGB image with {pixel_type} pixels; RGB must be 8- or 16-bit unsigned")
        return None
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        problems.append(
            f"{path}: {int(np.isnan(data).sum())} NaN and {int(np.isinf(data).sum())} Inf pixels (expected none)"
        )
        return None
    if data.dtype.kind not in "uif":
        problems.append(f"{path}: unsupported pixel type {data.dtype} (expected integers or floats)")
        return None
    color = data.ndim == 3 and not (
        np.array_equal(data[..., 0], data[..., 1]) and np.array_equal(data[..., 1], data[..., 2])
    )
    if data.ndim == 3 and not color:
        data = data[..., 0]
    return Image2D(pixels=data, pixel_type=pixel_type, color=color)


def read_channel_files(record: CaseRecord, mask_size: tuple[int, ...] | None, problems: list[str]) -> Image2D | None:
    """The grey channel files of a case (`CaseRecord.channel_files`) stacked as pixels [H,W,C]; None with
    problems appended (each naming its file) when one is unreadable, RGB, of another pixel type than
    channel 0, or of another size than the mask (`mask_size`, None: unknown, then channel 0's size)."""
    reads = [read_image_2d(path, problems) for path in record.channel_files]
    if any(r is None for r in reads):
        return None
    first = reads[0]
    assert first is not None
    size = mask_size or first.pixels.shape[:2]
    bad = len(problems)
    for c, (path, img) in enumerate(zip(record.channel_files, reads)):
        assert img is not None
        if img.color:
            problems.append(f"{path}: channel {c} is an RGB image; a channel file must be one grey image (8 or 16 bit)")
        elif img.pixels.shape != tuple(size):
            problems.append(f"{path}: channel {c} has size {_shape(img.pixels.shape)}, its mask {record.label.name} "
                            f"{_shape(size)} (H x W; every channel needs the mask's size)")
        elif img.pixel_type != first.pixel_type:
            problems.append(f"{path}: channel {c} has {img.pixel_type} pixels, channel 0 {first.pixel_type} "
                            f"(every channel needs one pixel type)")
    if len(problems) > bad:
        return None
    pixels = np.stack([r.pixels for r in reads if r is not None], axis=-1)
    return Image2D(pixels=pixels, pixel_type=first.pixel_type, color=False, channel_files=len(reads))


def luminance(pixels: np.ndarray) -> np.ndarray:
    """[H,W,3] -> [H,W] float32 luminance (ITU-R 601-2 weights); [H,W] unchanged (as float32)."""
    if pixels.ndim == 2:
        return pixels.astype(np.float32)
    w = LUMA_WEIGHTS.astype(np.float32)
    return pixels[..., 0] * w[0] + pixels[..., 1] * w[1] + pixels[..., 2] * w[2]


def channel_spread(pixels: np.ndarray) -> int:
    """Largest difference between two colour channels of [H,W,3] integer pixels (0 for [H,W])."""
    if pixels.ndim == 2:
        return 0
    r, g, b = (pixels[..., i].astype(np.int32) for i in range(3))
    return int(max(np.abs(r - g).max(), np.abs(g - b).max(), np.abs(r - b).max()))


def _read_jpeg_mask(path: Path, data: np.ndarray, problems: list[str], threshold: float | None = None) -> Mask2D | None:
    """JPEG mask by the rules of the module docstring; an explicit `threshold` replaces 127 and accepts
    any share of mid-grey pixels (the user chose where the edge lies)."""
    spread = channel_spread(data)
    if spread > MAX_JPEG_CHANNEL_SPREAD:
        problems.append(
            f"{path}: JPEG mask has colour (R/G/B differ by up to {spread} levels); colour-coded "
            f"labels are not supported: save integer labels as a grayscale PNG"
        )
        return None
    # identical channels (the usual case) need no weighting; luminance rounds to integer levels
    gray = data[..., 0] if data.ndim == 3 and spread == 0 else np.rint(luminance(data))
    lo, hi = MIDGREY_LEVELS
    midgrey = int(((gray >= lo) & (gray <= hi)).sum())
    fraction = midgrey / gray.size
    if threshold is not None:
        return Mask2D(labels=(gray > threshold).astype(np.uint8), rule="threshold", midgrey_pixels=midgrey)
    if fraction > MAX_MIDGREY_FRACTION:
        problems.append(
            f"{path}: JPEG mask values do not cluster near 0 and 255: {100 * fraction:.2f}% of pixels are "
            f"mid-grey ({lo}..{hi}; at most {100 * MAX_MIDGREY_FRACTION:g}% allowed); only binary masks "
            f"can be JPEG: store multi-label or soft masks as PNG"
        )
        return None
    labels = (gray > JPEG_MASK_THRESHOLD).astype(np.uint8)
    if not labels.any() and gray.max() > 0:
        problems.append(
            f"{path}: JPEG mask has no pixel above {JPEG_MASK_THRESHOLD} but values up to {int(gray.max())}: "
            f"were labels 0/1 saved as JPEG? Store masks as PNG"
        )
        return None
    return Mask2D(labels=labels, rule="jpeg_threshold", midgrey_pixels=midgrey)


def stray_values(data: np.ndarray) -> str | None:
    """Why a lossless mask looks like a binary mask with stray values, or holds too many values to be
    labels (see the module docstring); None when neither."""
    values, counts = np.unique(data, return_counts=True)
    if len(values) > MANY_MASK_VALUES:
        return f"{len(values)} distinct values"
    if len(values) < MIN_STRAY_DISTINCT:
        return None
    nonzero = values > 0
    main = values[nonzero][np.argmax(counts[nonzero])]
    stray = int(counts[(values != 0) & (values != main)].sum())
    if main < 128 or stray > MAX_STRAY_FRACTION * data.size:
        return None
    return (f"{len(values)} distinct values; {100 * stray / data.size:.1f}% of pixels are neither 0 nor "
            f"{int(main)} (the main foreground value)")


def _read_lossless_mask(path: Path, data: np.ndarray, problems: list[str], threshold: float | None = None) -> Mask2D | None:
    if data.ndim == 3:
        spread = channel_spread(data)
        if spread:
            problems.append(
                f"{path}: colour mask: the channels differ (by up to {spread}; colour-coded labels are not "
                f"supported); save integer labels as a grayscale or palette PNG"
            )
            return None
        data = data[..., 0]
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            problems.append(f"{path}: mask has NaN or Inf pixels (expected integer labels)")
            return None
        if (data != np.round(data)).any():
            problems.append(f"{path}: mask has non-integer values (expected integer labels)")
            return None
    values = np.unique(data)
    if values.min() < 0:
        problems.append(f"{path}: mask has negative values {values[values < 0][:5].tolist()}")
        return None
    if threshold is not None:
        return Mask2D(labels=(data > threshold).astype(np.uint8), rule="threshold")
    full = 65535 if data.dtype == np.uint16 else 255
    if values.max() == full and set(values.tolist()) <= {0, full}:
        return Mask2D(labels=(data == full).astype(np.uint8), rule="binary_255")
    if values.max() > MAX_MASK_LABEL:
        problems.append(
            f"{path}: mask value {int(values.max())} above {MAX_MASK_LABEL} (masks hold integer labels 0..255; "
            f"only a mask of exactly 0 and {full} is read as binary; pass --mask-threshold T, e.g. "
            f"{full // 2}, when the foreground is one bright value with stray greys)"
        )
        return None
    return Mask2D(labels=data.astype(np.uint8), rule="labels", stray=stray_values(data))


def read_mask_2d(path: Path, problems: list[str], threshold: float | None = None) -> Mask2D | None:
    """Read one 2D mask by the rules in the module docstring; None with problems appended when unusable.

    Args:
        threshold: masks become binary, label = value > threshold (JPEG: luminance > threshold, else > 127).
    """
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            data = _read_tiff(path)
        else:
            data = _read_pil(path, for_mask=True)
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as e:
        problems.append(f"{path}: unreadable mask ({type(e).__name__}: {e})")
        return None
    data = np.asarray(data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    data = _to_channels_last(data, path, problems)
    if data is None:
        return None
    if path.suffix.lower() in JPEG_SUFFIXES:
        return _read_jpeg_mask(path, data, problems, threshold)
    return _read_lossless_mask(path, data, problems, threshold)


def read_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header without decoding the pixels; None when unreadable."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                axes = tif.series[0].axes
            return (shape[1], shape[2]) if axes.startswith("S") else (shape[0], shape[1])
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - any failure: the full read reports it, naming the file
        return None


def check_image_pair(record: CaseRecord, declared_labels: set[int] | None,
                     mask_threshold: float | None = None) -> ImagePair:
    """Read `record`'s image and mask and check them: readable (see `read_image_2d`, `read_mask_2d`, which
    takes `mask_threshold`), the same size, and mask values among `declared_labels` (None: any value a mask
    may hold)."""
    pair = ImagePair(record)
    pair.mask = read_mask_2d(record.label, pair.problems, mask_threshold)
    if record.channel_files:
        pair.image = read_channel_files(record, None if pair.mask is None else pair.mask.labels.shape, pair.problems)
    else:
        pair.image = read_image_2d(record.image, pair.problems)
    if pair.image is None or pair.mask is None:
        return pair
    labels = pair.mask.labels
    height, width = pair.image.pixels.shape[:2]
    if labels.shape != (height, width):
        pair.problems.append(
            f"{record.label}: mask size {labels.shape[0]}x{labels.shape[1]} differs from image size "
            f"{height}x{width} (H x W, {record.image.name})"
        )
    pair.labels_seen = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=MAX_MASK_LABEL + 1)).tolist())
    if declared_labels is not None and pair.labels_seen - declared_labels:
        unknown = sorted(pair.labels_seen - declared_labels)
        pair.problems.append(
            f"{record.label}: label values {unknown} outside the declared labels {sorted(declared_labels)}"
        )
    return pair
