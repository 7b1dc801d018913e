"""A tiny synthetic 2D dataset (PNG, JPEG or TIFF), for tests and for trying 2D models without data.

Each case is a noisy dark image holding one bright disc of random radius and centre; the mask is
the disc (label 1). Files: ``images/<id>.<ext>`` and ``masks/<id>.<ext>`` (ids ``toy2d_000``, ...),
the layout `synthmed prepare` reads as a folder of 2D images. Masks are written as 0/255 (which
prepare reads back as 0/1). Everything is drawn from `seed`: equal seeds write equal files, and the
discs depend only on `seed`, `n` and `size` (not on colour, format or bit depth), so two toy sets
that differ only in format have identical masks.

Gray levels (before noise): background 20% of full scale, disc 80% (8-bit: 51 and 204; 16-bit:
about 13107 and 52428). RGB images tint the disc reddish (R > G > B) so the channels differ.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from synthmed.errors import UserError

TOY2D_FORMATS = ("png", "jpg", "tif")
BACKGROUND_LEVEL = 0.2  # fraction of full scale
DISC_LEVEL = 0.8
NOISE_LEVEL = 0.03
RGB_TINT = (1.0, 0.8, 0.6)  # disc colour per channel, relative to DISC_LEVEL


def toy_disc(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A bool [H,W] disc of random radius (15..30% of the smaller side) and centre, inside the image."""
    h, w = size
    radius = rng.uniform(0.15, 0.30) * min(h, w)
    cy = rng.uniform(radius, h - radius)
    cx = rng.uniform(radius, w - radius)
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def toy_image_2d(disc: np.ndarray, rng: np.random.Generator, rgb: bool, bits: int) -> np.ndarray:
    """Pixels [H,W] or [H,W,3] (uint8 or uint16) of a bright `disc` on a dark noisy background."""
    full = 2**bits - 1
    tint = np.array(RGB_TINT if rgb else (1.0,))
    level = np.where(disc[..., None], DISC_LEVEL * tint, BACKGROUND_LEVEL)
    level = level + rng.normal(0.0, NOISE_LEVEL, size=level.shape)
    pixels = np.clip(np.rint(level * full), 0, full).astype(np.uint8 if bits == 8 else np.uint16)
    return pixels if rgb else pixels[..., 0]


def _save(path: Path, pixels: np.ndarray, fmt: str) -> None:
    if fmt == "tif":
        import tifffile

        tifffile.imwrite(path, pixels)
    elif fmt == "jpg":
        Image.fromarray(pixels).save(path, quality=90)
    else:
        Image.fromarray(pixels).save(path)


def write_toy_2d_dataset(
    root: str | os.PathLike,
    n: int = 24,
    size: int | tuple[int, int] = 32,
    rgb: bool = False,
    fmt: str = "png",
    bits: int = 8,
    seed: int = 0,
) -> Path:
    """Write `n` toy 2D cases under `root` (``images/``, ``masks/``); return `root`, to give `prepare`.

    Args:
        root: folder to create (it may exist; files in it are overwritten).
        n: number of cases, named ``toy2d_000``, ``toy2d_001``, ...
        size: image size, one number (square) or (H, W).
        rgb: RGB images (a reddish disc) instead of grayscale.
        fmt: ``"png"``, ``"jpg"`` (masks are JPEG too, so noisy around 0 and 255) or ``"tif"``.
        bits: 8, or 16 (PNG and TIFF only).
        seed: seed of every random draw (disc and noise).
    """
    if fmt not in TOY2D_FORMATS:
        raise UserError(f"unknown toy 2D format {fmt!r}; valid: {', '.join(TOY2D_FORMATS)}")
    if bits not in (8, 16) or (bits == 16 and fmt == "jpg") or (bits == 16 and rgb and fmt == "png"):
        raise UserError(f"bits={bits} is not possible for fmt={fmt!r}, rgb={rgb} (16-bit: grayscale PNG or TIFF)")
    size = (size, size) if isinstance(size, int) else tuple(size)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    disc_rng, noise_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    for i in range(n):
        disc = toy_disc(size, disc_rng)  # type: ignore[arg-type]
        _save(root / "images" / f"toy2d_{i:03d}.{fmt}", toy_image_2d(disc, noise_rng, rgb, bits), fmt)
        _save(root / "masks" / f"toy2d_{i:03d}.{fmt}", disc.astype(np.uint8) * 255, fmt)
    return root


def prepare_toy_2d(root: str | os.PathLike, shape: tuple[int, int] | None = None, **toy_kwargs) -> Path:
    """Write a toy 2D dataset to ``root/raw`` and prepare it into ``root/prepared``.

    Args:
        root: folder for both.
        shape: prepared (H, W); None keeps the toy size.
        toy_kwargs: arguments of `write_toy_2d_dataset` (n, size, rgb, fmt, bits, seed).

    Returns:
        The manifest path (``root/prepared/manifest.json``); splits: 20% test, 10% val, 3 folds.
    """
    from synthmed.data.prepare import PrepareOptions, prepare_dataset

    raw = write_toy_2d_dataset(Path(root) / "raw", **toy_kwargs)
    options = PrepareOptions(shape=shape, test_fraction=0.2, val_fraction=0.1, folds=3)
    return prepare_dataset([raw], Path(root) / "prepared", options, overwrite=True, progress=False)
