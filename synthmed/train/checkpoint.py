"""Checkpoints: state dicts and plain data only, loadable with ``weights_only=True``; their writers and readers.

A checkpoint holds everything ``--resume`` needs to continue a run exactly: networks, EMA generator,
optimisers, step, RNG states and the loss accumulators of the current logging window, and the run's
``history`` (see `synthmed.train.run_history`). Readers never fall back to an older checkpoint on their own.
"""

from __future__ import annotations

import json
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
from synthmed.train.run_history import trained_case_ids, trained_manifests

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


GENERATOR_FORMAT = "synthmed-generator"
_JSON_METADATA = ("model", "data_info", "config", "trained_on_case_ids", "trained_on_manifests", "labels",
                  "preprocessing", "classes")


def generator_provenance(state: dict[str, Any]) -> dict[str, str]:
    """The metadata of an exported generator, from the run's state at export: what rebuilds the model
    (``model``, ``data_info``) and the dataset card's fields (run config, step, synthmed version, manifest
    hash and path, every case the generator saw and their count, labels, intensity mapping, classes).
    Safetensors metadata holds strings only: structured values are JSON."""
    data = state["data"]
    trained_on = trained_case_ids(state)
    values = {
        "model": state["config"]["model"], "data_info": state["data_info"], "config": state["config"],
        "trained_on_case_ids": trained_on, "trained_on_manifests": trained_manifests(state),
        "labels": data["labels"], "preprocessing": data["preprocessing"], "classes": data.get("classes"),
    }
    return {
        "format": GENERATOR_FORMAT, **{k: json.dumps(v) for k, v in values.items()},
        "step": str(state["step"]), "synthmed_version": state["synthmed_version"],
        "manifest_sha256": data["manifest_sha256"], "manifest_path": data["manifest_path"],
        "trained_on_count": str(len(trained_on)),
    }


def export_generator(model: GenerativeModel, state: dict[str, Any], path: Path) -> Path:
    """Save the EMA network's weights as safetensors, with `generator_provenance` of ``state`` as metadata.

    Other networks sampling needs (a latent model's autoencoder) follow under ``<name>.`` prefixes.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.ema_net.state_dict().items()}
    for name, net in model.sampling_networks().items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=generator_provenance(state))
    tmp.replace(path)
    return path


def load_exported_generator(path: str | Path, device: str = "cpu") -> tuple[GenerativeModel, dict[str, Any]]:
    """The model of a ``generator.safetensors`` (EMA weights; sampling uses them) and its provenance
    (`generator_provenance`, JSON fields decoded, ``step`` and ``trained_on_count`` as ints).

    Raises:
        UserError: the file is missing, not safetensors, or not a synthmed generator.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: generator file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != GENERATOR_FORMAT:
        raise UserError(f"{path}: not a synthmed generator (its metadata lacks \"format\": \"{GENERATOR_FORMAT}\")")
    provenance = {k: json.loads(v) if k in _JSON_METADATA else v for k, v in metadata.items()}
    for key in ("step", "trained_on_count"):
        if key in provenance:
            provenance[key] = int(provenance[key])
    info = provenance["data_info"]
    model = build_model(provenance["model"]["name"], provenance["model"]["params"],
                        DataInfo(tuple(info["shape"]), info["image_channels"], info["num_labels"]))
    _load_exported_weights(model, tensors, path)
    return model.to(device).eval(), provenance


def _load_exported_weights(model: GenerativeModel, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """EMA weights into both the EMA and the trained network (a loaded generator has only those), the
    ``<name>.``-prefixed tensors into the sampling networks."""
    extra = model.sampling_networks()
    own = {k: v for k, v in tensors.items() if k.split(".", 1)[0] not in extra}
    try:
        model.ema_net.load_state_dict(own)
        model.nets[model.ema_target].load_state_dict(own)
        for name, net in extra.items():
            net.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(f"{name}.")})
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the model its metadata describes ({str(err).splitlines()[0]})") from None
