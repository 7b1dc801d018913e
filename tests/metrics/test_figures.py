"""Figures: 2D images upright and in colour, one fixed colour per label in every mask panel."""

from __future__ import annotations

import numpy as np
from PIL import Image

from synthmed.metrics.plots import save_closest_pairs
from synthmed.sample.montage import display_pair, label_colour, save_montage


def _marked_2d(h: int = 12, w: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image [3, H, W] with a red block at the top left, and its mask (label 1 there)."""
    image = np.zeros((3, h, w))
    image[0, :4, :6] = 255
    mask = np.zeros((h, w), int)
    mask[:4, :6] = 1
    return image, mask


def test_2d_images_are_shown_as_stored_and_rgb_in_colour():
    image, mask = _marked_2d()
    pixels, shown_mask, origin = display_pair(image, mask)
    assert origin == "upper" and pixels.shape == (12, 20, 3)  # rows down, not transposed; 3 channels kept
    assert pixels[0, 0, 0] == 1.0 and pixels[0, 0, 1] == 0.0  # the top-left pixel is red
    assert np.array_equal(shown_mask, mask)
    gray, _, _ = display_pair(image[:1], mask)
    assert gray.shape == (12, 20)


def test_3d_volumes_keep_the_ras_view():
    volume = np.zeros((1, 6, 8, 4))
    mask = np.zeros((6, 8, 4), int)
    mask[1, 2, 3] = 1
    pixels, shown_mask, origin = display_pair(volume, mask)
    assert origin == "lower" and pixels.shape == (8, 6) and shown_mask[2, 1] == 1  # axial slice through the label


def _colours(path) -> set[tuple[int, int, int]]:
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(rgb, axis=0)}


def test_mask_panels_share_one_label_colour_map(tmp_path):
    image, _ = _marked_2d()
    only_label_2 = np.zeros((12, 20), int)
    only_label_2[5:, 10:] = 2
    path = save_closest_pairs(tmp_path / "pairs.png", [("syn", image, only_label_2, "train", image[:1], only_label_2)])
    colours = _colours(path)
    orange, blue = (tuple(round(255 * c) for c in label_colour(k)) for k in (2, 1))
    assert orange in colours  # label 2 in its own colour, though it is the largest value of the panel
    assert blue not in colours  # and never in label 1's


def test_montage_draws_2d_rgb_upright(tmp_path):
    image, mask = _marked_2d(40, 60)
    path = save_montage(tmp_path / "m.png", [("real", image[None], mask[None])], n_cols=1)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)
    rows, cols = np.nonzero(red)
    panel = np.nonzero(rgb.sum(-1) < 60)  # the black background of the panel
    assert rows.mean() < np.mean(panel[0]) and cols.mean() < np.mean(panel[1])  # red block at the panel's top left
