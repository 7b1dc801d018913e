"""Render one study item for the browser: windowed views as PNG, the mask as a transparent PNG overlay.

Every item, whatever its origin, goes through the same functions with the same `RenderOptions`, so
two renders differ only in content: same window, same pixel size, same encoder settings and no PNG
metadata (no text, time or physical-size chunks).

Orientation (3D): prepared volumes are RAS arrays (axis 0 runs to the patient's right, axis 1 to
anterior, axis 2 to superior). Views follow the radiological convention: axial and coronal show the
patient's right on the viewer's left; axial has anterior at the top; coronal and sagittal have
superior at the top; sagittal has anterior on the left.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

VIEWS_3D = ("axial", "coronal", "sagittal")
VIEWS_2D = ("image",)
LAYERS = ("image", "overlay")
INTERPOLATIONS = ("bilinear", "nearest")
# the axis held fixed by each 3D view (RAS array axes: 0 = x, 1 = y, 2 = z)
VIEW_FIXED_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
# label colours of the overlay (RGB), cycled for labels beyond the list; label 0 stays transparent
OVERLAY_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
                   (70, 240, 240), (245, 130, 48), (240, 50, 230))
ALLOWED_PNG_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})


@dataclass(frozen=True)
class RenderOptions:
    window: tuple[float, float]  # (lo, hi) in network units: lo shows black, hi shows white
    spacing: tuple[float, ...]  # display voxel size per spatial axis, one value set for the whole study
    panel_size: int = 320  # pixels of the longest physical extent of the volume (or image)
    interpolation: str = "bilinear"  # image resampling: "bilinear" or "nearest" (masks are always nearest)
    overlay_alpha: float = 0.45  # opacity of the mask colours in the overlay


def views_for(dims: int) -> tuple[str, ...]:
    """The view names of a ``dims``-dimensional study."""
    return VIEWS_3D if dims == 3 else VIEWS_2D


def mask_centroid(mask: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the centroid of the foreground (mask > 0); the array centre when the mask is empty."""
    foreground = np.argwhere(np.asarray(mask) > 0)
    if len(foreground) == 0:
        return tuple(n // 2 for n in mask.shape)
    centre = np.rint(foreground.mean(axis=0)).astype(int)
    return tuple(int(np.clip(c, 0, n - 1)) for c, n in zip(centre, mask.shape))


def _plane(array: np.ndarray, fixed_axis: int, index: int) -> np.ndarray:
    """The slice ``index`` across spatial axis `fixed_axis` of ``[..., X, Y, Z]``, as displayed ``[..., rows, cols]``.

    The two remaining axes (a, b) become rows = b reversed, cols = a reversed: the general form of the
    radiological layout described in the module docstring.
    """
    spatial_axis = array.ndim - 3 + fixed_axis
    plane = np.take(array, index, axis=spatial_axis)  # [..., a, b]
    return np.flip(np.swapaxes(plane, -1, -2), axis=(-2, -1))


def _plane_spacing(spacing: tuple[float, ...], fixed_axis: int) -> tuple[float, float]:
    a, b = [s for axis, s in enumerate(spacing) if axis != fixed_axis]
    return b, a  # (row spacing, column spacing)


def display_size(shape: tuple[int, int], spacing: tuple[float, float], scale: float) -> tuple[int, int]:
    """Pixel (height, width) of a plane of `shape` voxels with `spacing` at `scale` pixels per unit."""
    return max(1, round(shape[0] * spacing[0] * scale)), max(1, round(shape[1] * spacing[1] * scale))


def _scale(shape: tuple[int, ...], options: RenderOptions) -> float:
    extent = max(n * s for n, s in zip(shape, options.spacing))
    return options.panel_size / extent


def view_planes(image: np.ndarray, mask: np.ndarray, options: RenderOptions) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """Per view: (image plane ``[C, rows, cols]``, mask plane ``[rows, cols]``, display (height, width)).

    3D: axial, coronal and sagittal planes through the mask centroid. 2D: the whole image.
    """
    spatial = mask.shape
    scale = _scale(spatial, options)
    if mask.ndim == 2:
        return {"image": (image, mask, display_size(spatial, tuple(options.spacing), scale))}
    centre = mask_centroid(mask)
    out = {}
    for view in VIEWS_3D:
        axis = VIEW_FIXED_AXIS[view]
        image_plane, mask_plane = _plane(image, axis, centre[axis]), _plane(mask, axis, centre[axis])
        out[view] = (image_plane, mask_plane, display_size(mask_plane.shape, _plane_spacing(options.spacing, axis), scale))
    return out


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    # pixel-centre convention, the same as PIL's resampling, so image and overlay stay aligned
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)


def resize_nearest(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes to `size` (height, width)."""
    rows, cols = _nearest_indices(plane.shape[-2], size[0]), _nearest_indices(plane.shape[-1], size[1])
    return plane[..., rows[:, None], cols[None, :]]


def window_to_unit(plane: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Linear map of `window` (lo, hi) onto [0, 1], clipped; float32."""
    lo, hi = window
    return np.clip((np.asarray(plane, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _resize_unit(plane: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize a [rows, cols] float plane in [0, 1] to `size`."""
    if interpolation == "nearest":
        return resize_nearest(plane, size)
    resized = Image.fromarray(plane, mode="F").resize((size[1], size[0]), resample=Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def image_pixels(image_plane: np.ndarray, size: tuple[int, int], options: RenderOptions) -> np.ndarray:
    """Windowed, resized 8-bit pixels: ``[H, W]`` for one channel, ``[H, W, 3]`` for RGB."""
    unit = window_to_unit(image_plane, options.window)  # [C, rows, cols]
    channels = [_resize_unit(c, size, options.interpolation) for c in unit]
    pixels = np.rint(np.stack(channels, axis=-1) * 255.0).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def overlay_pixels(mask_plane: np.ndarray, size: tuple[int, int], alpha: float) -> np.ndarray:
    """RGBA ``[H, W, 4]`` overlay: one colour per label, transparent background."""
    labels = resize_nearest(np.asarray(mask_plane, dtype=np.int64), size)
    rgba = np.zeros((*size, 4), np.uint8)
    for label in np.unique(labels):
        if label <= 0:
            continue
        rgba[labels == label] = (*OVERLAY_COLOURS[(label - 1) % len(OVERLAY_COLOURS)], round(alpha * 255))
    return rgba


def png_chunk_types(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order (e.g. ``[b"IHDR", b"IDAT", b"IEND"]``)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    types, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        types.append(kind)
        offset += 12 + length
    return types


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of 8-bit pixels (L, RGB or RGBA) with no metadata chunks."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    data = buffer.getvalue()
    extra = set(png_chunk_types(data)) - ALLOWED_PNG_CHUNKS
    assert not extra, f"PNG encoder wrote metadata chunks {extra}"  # our invariant: renders carry content only
    return data


def render_item(image: np.ndarray, mask: np.ndarray, options: RenderOptions) -> dict[str, dict[str, bytes]]:
    """PNG bytes per view and layer: ``{view: {"image": png, "overlay": png}}``.

    Args:
        image: ``[C, X, Y, Z]`` (3D, RAS) or ``[C, H, W]`` (2D) in network units; C is 1 or 3.
        mask: integer labels ``[X, Y, Z]`` or ``[H, W]``.
        options: the study's render options (the same for every item).
    """
    out = {}
    for view, (image_plane, mask_plane, size) in view_planes(image, mask, options).items():
        out[view] = {"image": encode_png(image_pixels(image_plane, size, options)),
                     "overlay": encode_png(overlay_pixels(mask_plane, size, options.overlay_alpha))}
    return out
