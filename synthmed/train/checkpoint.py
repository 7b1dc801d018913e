"""Checkpoints: state dicts and plain data only, loadable with ``weights_only=True``; their writers and readers.

A checkpoint holds everything ``--resume`` needs to continue a run exactly: networks, EMA generator,
optimisers, step, RNG states and the loss accumulators of the current logging window, and the run's
``history`` (see `synthmed.train.run_history`). Readers never fall back to an older checkpoint on their own.
"""

from __future__ import annotations

import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.errors import UserError
from synthmed.fileio import atomic_torch_save
from synthmed.models.base import GenerativeModel
from synthmed.models.registry import DataInfo, build_model

CHECKPOINT_FORMAT = "synthmed-checkpoint"
EMA_KEY = "G_ema"  # the EMA network's entry: named when every model was a GAN, kept so older checkpoints load
_NAME = re.compile(r"step_(\d+)\.pt$")
BEST_NAME = "best.pt"


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("step_*.pt") if _NAME.search(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(_NAME.search(p.name).group(1)))


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    path = checkpoint_path(run_dir, step)
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "step": step, **state}, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def best_checkpoint_path(run_dir: Path) -> Path:
    """``checkpoints/best.pt``: the checkpoint with the lowest fidelity figure (``train.fidelity_every``)."""
    return Path(run_dir) / "checkpoints" / BEST_NAME


def save_best_checkpoint(run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write the checkpoint of ``step`` as ``checkpoints/best.pt``; `save_checkpoint`'s pruning never removes it."""
    path = best_checkpoint_path(run_dir)
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "step": step, **state}, path)
    return path


def resolve_best_checkpoint(run: str | Path) -> Path:
    """The best checkpoint of a run folder (``sample --best``).

    Raises:
        UserError: not a run folder, or one without ``checkpoints/best.pt``.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: --best needs a run folder (it picks the folder's checkpoints/{BEST_NAME})")
    path = best_checkpoint_path(run)
    if not path.is_file():
        raise UserError(f"{path}: no best checkpoint; a run keeps one only when trained with train.fidelity_every")
    return path


def remove_unfinished_checkpoints(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that never finished (a killed run leaves them)."""
    folder = Path(run_dir) / "checkpoints"
    leftovers = sorted([*folder.glob(".step_*.pt.*.tmp"), *folder.glob(f".{BEST_NAME}.*.tmp")]) if folder.is_dir() else []
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its newest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise UserError(f"{path}: no checkpoints found in {path / 'checkpoints'}")
        return found[-1]
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint file, or a run folder's newest checkpoint (see `load_newest_checkpoint`), with ``path`` added.

    Raises:
        UserError: no checkpoint there, or one that is unreadable or not synthmed's.
    """
    if Path(path).is_dir():
        return load_newest_checkpoint(path, map_location)
    return _read_checkpoint(resolve_checkpoint(path), map_location)


def load_newest_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu",
                           use_older: str = "pass that file instead of the run folder (e.g. --checkpoint {older}), "
                                            "or delete the unreadable {newest}") -> dict[str, Any]:
    """The newest checkpoint of a run folder. It never falls back to an older one on its own.

    Args:
        use_older: how to use the older checkpoint, when the newest is unreadable and an older one is
            readable; ``{older}`` and ``{newest}`` are replaced by their paths.

    Raises:
        UserError: no checkpoints, or the newest is unreadable (naming the newest readable older one).
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir}: no checkpoints found in {Path(run_dir) / 'checkpoints'}")
    try:
        return _read_checkpoint(found[-1], map_location)
    except UserError as err:
        older = _newest_readable(found[:-1])
        if older is None:
            raise
        hint = use_older.format(older=older, newest=found[-1])
        raise UserError(f"{err}; the previous checkpoint {older} (step {_step_of(older)}) is readable: {hint}") from None


def _newest_readable(paths: list[Path]) -> Path | None:
    for path in reversed(paths):
        try:
            _read_checkpoint(path, "cpu")
        except UserError:
            continue
        return path
    return None


def _step_of(path: Path) -> int:
    return int(_NAME.search(path.name).group(1))


def _read_checkpoint(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of foreign files
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False, which would run the file's code
        raise UserError(f"{path}: not a synthmed checkpoint (it holds Python objects that a safe load refuses; "
                        "synthmed checkpoints hold state dicts only)") from None
    except Exception:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: not a readable synthmed checkpoint ({_why_unreadable(path)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a synthmed checkpoint (missing format marker)")
    state["path"] = str(path)
    return state


def _why_unreadable(path: Path) -> str:
    with open(path, "rb") as f:
        is_archive = f.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    return "truncated or corrupted: an incomplete torch archive" if is_archive else "not a torch checkpoint file"


def model_weights(model: GenerativeModel) -> dict[str, dict[str, torch.Tensor]]:
    """The checkpoint entries of a model's weights: its trainable networks and their EMA network."""
    return {"nets": model.nets.state_dict(), EMA_KEY: model.ema_net.state_dict()}


def load_model_weights(model: GenerativeModel, state: dict[str, Any]) -> None:
    """Load what `model_weights` saved into ``state`` (a loaded checkpoint)."""
    model.nets.load_state_dict(state["nets"])
    model.ema_net.load_state_dict(state[EMA_KEY])


def load_generator(checkpoint: str | Path, device: str = "cpu") -> tuple[GenerativeModel, dict]:
    """Rebuild the model of a checkpoint (file or run folder) with its trained weights."""
    state = load_checkpoint(checkpoint, map_location=device)
    info = state["data_info"]
    data_info = DataInfo(tuple(info["shape"]), info["image_channels"], info["num_labels"])
    model_cfg = state["config"]["model"]
    model = build_model(model_cfg["name"], model_cfg["params"], data_info)
    load_model_weights(model, state)
    return model.to(device).eval(), state


def export_generator(model: GenerativeModel, config: dict, data_info: dict, path: Path) -> Path:
    """Save the EMA network's weights as safetensors; the metadata holds what rebuilds the model.

    Other networks sampling needs (a latent model's autoencoder) follow under ``<name>.`` prefixes.
    """
    import json

    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.ema_net.state_dict().items()}
    for name, net in model.sampling_networks().items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    metadata = {"format": "synthmed-generator", "model": json.dumps(config["model"]), "data_info": json.dumps(data_info)}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path
