"""Rendering: orientation of the three views, centroid slices, window, sizes from spacing, overlay, PNG without metadata."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthmed.vtt.render import (
    OVERLAY_COLOURS, RenderOptions, encode_png, mask_centroid, png_chunk_types, render_item, view_planes,
)
from .conftest import assert_clean_png

SHAPE = (8, 6, 4)  # RAS array axes: x (to the right), y (to anterior), z (to superior)


def _marker_volume(x: int, y: int, z: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((1, *SHAPE), -1.0, np.float32)
    image[0, x, y, z] = 1.0
    mask = np.zeros(SHAPE, np.int64)
    mask[x, y, z] = 1
    return image, mask


def _options(**kw) -> RenderOptions:
    return RenderOptions(**{"window": (-1.0, 1.0), "spacing": (1.0, 1.0, 1.0), "panel_size": 80, **kw})


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_views_are_radiological():
    # right-anterior-superior corner: top left in every view (patient's right on the viewer's left,
    # anterior up in axial, superior up in coronal and sagittal, anterior left in sagittal)
    planes = view_planes(*_marker_volume(7, 5, 3), _options())
    assert {v: p[0].shape[1:] for v, p in planes.items()} == {"axial": (6, 8), "coronal": (4, 8), "sagittal": (4, 6)}
    for view, (image_plane, mask_plane, _) in planes.items():
        assert image_plane[0, 0, 0] == 1.0 and mask_plane[0, 0] == 1, view
        assert image_plane.sum() == 1.0 - (image_plane.size - 1), view  # only the marker is bright
    # left-posterior-inferior corner: bottom right everywhere
    for view, (image_plane, mask_plane, _) in view_planes(*_marker_volume(0, 0, 0), _options()).items():
        assert image_plane[0, -1, -1] == 1.0 and mask_plane[-1, -1] == 1, view


def test_slices_pass_through_the_mask_centroid_or_the_centre():
    mask = np.zeros((9, 9, 9), np.int64)
    mask[2:5, 6:9, 1:4] = 2  # centroid (3, 7, 2)
    assert mask_centroid(mask) == (3, 7, 2)
    assert mask_centroid(np.zeros((9, 10, 4), np.int64)) == (4, 5, 2)
    image = np.zeros((1, 9, 9, 9), np.float32)
    image[0, :, :, 2] = 1.0  # the axial plane z = 2 is bright
    axial = view_planes(image, mask, _options(spacing=(1.0, 1.0, 1.0)))["axial"][0]
    assert axial.min() == 1.0


def test_sizes_follow_the_display_spacing():
    image, mask = _marker_volume(4, 3, 2)
    options = _options(spacing=(1.0, 1.0, 3.0), panel_size=120)  # extents 8, 6, 12 mm: 10 px per mm
    pngs = render_item(image, mask, options)
    sizes = {v: _decode(layers["image"]).shape for v, layers in pngs.items()}
    assert sizes == {"axial": (60, 80), "coronal": (120, 80), "sagittal": (120, 60)}
    assert {v: _decode(layers["overlay"]).shape for v, layers in pngs.items()} == {k: (*s, 4) for k, s in sizes.items()}


def test_window_maps_lo_to_black_and_hi_to_white():
    image = np.array([[[-0.5, 0.0, 0.5, 0.9]]], np.float32)  # [C=1, H=1, W=4] (2D)
    mask = np.zeros((1, 4), np.int64)
    pixels = _decode(render_item(image, mask, RenderOptions(window=(-0.5, 0.5), spacing=(1.0, 1.0), panel_size=4,
                                                             interpolation="nearest"))["image"]["image"])
    assert pixels.tolist() == [[0, 128, 255, 255]]


def test_overlay_is_transparent_off_the_mask_and_coloured_per_label():
    mask = np.array([[0, 1], [2, 0]], np.int64)
    image = np.zeros((1, 2, 2), np.float32)
    rgba = _decode(render_item(image, mask, _options(spacing=(1.0, 1.0), panel_size=2))["image"]["overlay"])
    assert rgba[0, 0, 3] == 0 and rgba[1, 1, 3] == 0
    assert tuple(rgba[0, 1]) == (*OVERLAY_COLOURS[0], round(0.45 * 255))
    assert tuple(rgba[1, 0]) == (*OVERLAY_COLOURS[1], round(0.45 * 255))


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_2d_items_render_as_one_view_in_gray_or_colour(channels, mode):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (channels, 12, 20)).astype(np.float32)
    mask = (rng.uniform(size=(12, 20)) > 0.7).astype(np.int64)
    pngs = render_item(image, mask, _options(spacing=(1.0, 1.0), panel_size=40))
    assert list(pngs) == ["image"]
    decoded = Image.open(io.BytesIO(pngs["image"]["image"]))
    assert decoded.mode == mode and decoded.size == (40, 24)
    assert Image.open(io.BytesIO(pngs["image"]["overlay"])).mode == "RGBA"


def test_pngs_carry_no_metadata_and_equal_content_gives_equal_bytes():
    image, mask = _marker_volume(3, 2, 1)
    first, second = render_item(image, mask, _options()), render_item(image.copy(), mask.copy(), _options())
    assert first == second
    for layers in first.values():
        for data in layers.values():
            assert_clean_png(data, "render")
    assert png_chunk_types(encode_png(np.zeros((2, 2), np.uint8))) == [b"IHDR", b"IDAT", b"IEND"]
