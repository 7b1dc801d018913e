"""Run logging: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard events and loss plots."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


class LossAccumulator:
    """Mean of each loss over the current logging window. Its state goes into checkpoints."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            self.sums[key] += float(value)  # a device sync: done once per phase, cheap at these sizes
            self.counts[key] += 1

    def pop_means(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}
        self.sums.clear()
        self.counts.clear()
        return means

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.sums = defaultdict(float, state["sums"])
        self.counts = defaultdict(int, state["counts"])


class RunLogger:
    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            _truncate_after(self.path, resume_step)
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)

    def log(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.tensorboard.add_scalar(key, value, record["step"])

    def log_image(self, tag: str, rgb: np.ndarray, step: int, png: Path) -> None:
        """An RGB uint8 picture [H, W, 3] to TensorBoard (``tag`` at ``step``) and to the file ``png``."""
        from PIL import Image

        self.tensorboard.add_image(tag, rgb, step, dataformats="HWC")
        png.parent.mkdir(parents=True, exist_ok=True)
        tmp = png.with_name(f".{png.name}.tmp")
        Image.fromarray(rgb).save(tmp, format="PNG")
        tmp.replace(png)

    def close(self) -> None:
        self.tensorboard.close()


def _truncate_after(path: Path, step: int) -> None:
    """Drop lines logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def ema_smooth(values: list[float], alpha: float = 0.9) -> list[float]:
    smoothed, current = [], None
    for v in values:
        current = v if current is None else alpha * current + (1 - alpha) * v
        smoothed.append(current)
    return smoothed


def plot_losses(metrics_path: Path, out_png: Path, alpha: float = 0.9) -> None:
    """One panel per loss: raw curve faint, EMA-smoothed curve bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthmed.fileio import atomic_savefig

    records = read_metrics(metrics_path)
    keys = sorted({k for r in records for k in r if k.startswith(("loss/", "wasserstein", "gradient"))})
    if not keys:
        return
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        steps, values = zip(*points)
        ax.plot(steps, values, alpha=0.3, lw=0.8)
        ax.plot(steps, ema_smooth(list(values), alpha), lw=1.6)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"training losses (EMA smoothing {alpha})", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, out_png)
    plt.close(fig)
