"""Figures as inline ``data:image/png;base64`` URIs: PNGs other stages wrote, loss curves, montages."""

from __future__ import annotations

import base64
import io
import math
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthmed.sample.montage import save_montage  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def png_file_uri(path: Path) -> str | None:
    """The PNG file as a data URI; None when it is missing or not a PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return png_data_uri(data) if data.startswith(PNG_SIGNATURE) else None


def figure_uri(fig: plt.Figure) -> str:
    """Render a matplotlib figure to a PNG data URI and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return png_data_uri(buffer.getvalue())


def loss_keys(records: list[dict]) -> list[str]:
    """The ``loss/*`` keys logged in a run's metrics.jsonl, in first-seen order."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k.startswith("loss/") and k not in keys]
    return keys


def loss_curves_uri(records: list[dict], title: str) -> str | None:
    """One small panel per logged loss against the training step; None when nothing was logged."""
    keys = loss_keys(records)
    if not keys:
        return None
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
        steps, values = zip(*points) if points else ((), ())
        ax.plot(steps, values, lw=1.2)
        ax.set_title(key.removeprefix("loss/"), fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_uri(fig)


def montage_uri(rows: list[tuple[str, np.ndarray, np.ndarray]], labels: dict[str, str]) -> str:
    """`save_montage` (central slices, masks overlaid, one row per set) as a data URI."""
    with tempfile.TemporaryDirectory(prefix="synthmed-report-") as tmp:
        path = save_montage(Path(tmp) / "montage.png", rows, n_cols=6, labels=labels)
        return png_data_uri(path.read_bytes())
