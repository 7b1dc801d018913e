"""Draw synthetic pairs from a checkpoint and write them with their dataset card.

Sampling reads only the checkpoint: it carries the model configuration, the generator (and its EMA),
and what the manifest said about the training data (labels, intensity mapping, geometry, case ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthmed.models.base import GenerativeModel
from synthmed.models.registry import DataInfo, build_model
from synthmed.sample.card import build_card
from synthmed.sample.writers import reference_affine, write_synthetic_set
from synthmed.train.checkpoint import load_checkpoint, resolve_checkpoint


def load_generator(checkpoint: str | Path, device: str = "cpu") -> tuple[GenerativeModel, dict]:
    """Rebuild the model of a checkpoint (file or run folder) with its trained weights."""
    state = load_checkpoint(checkpoint, map_location=device)
    info = state["data_info"]
    data_info = DataInfo(tuple(info["shape"]), info["image_channels"], info["num_labels"])
    model_cfg = state["config"]["model"]
    model = build_model(model_cfg["name"], model_cfg["params"], data_info)
    model.nets.load_state_dict(state["nets"])
    model.G_ema.load_state_dict(state["G_ema"])
    return model.to(device).eval(), state


def sample_to_folder(
    checkpoint: str | Path,  # checkpoint file, or a run folder (its newest checkpoint)
    n: int,  # number of pairs
    out: str | Path,  # folder to create (nnU-Net layout + card.json)
    seed: int = 0,
    batch_size: int = 8,  # generation batch; does not change the result
    use_ema: bool = True,  # sample from the EMA generator (recommended)
    min_component_size: int | None = None,  # drop mask components smaller than this many voxels
    keep_largest: bool = False,  # keep only the largest component per label
    overwrite: bool = False,
    device: str = "cpu",
) -> Path:
    path = resolve_checkpoint(checkpoint)
    model, state = load_generator(path, device)
    images, masks = model.sample(n, seed=seed, use_ema=use_ema, batch_size=batch_size)
    data = state["data"]
    card = build_card(
        model=state["config"]["model"]["name"],
        checkpoint_path=path,
        manifest_sha256=data["manifest_sha256"],
        trained_on=data["trained_on"],
        seed=seed,
        count=n,
        config={"model": state["config"]["model"], "step": state["step"], "use_ema": use_ema,
                "min_component_size": min_component_size, "keep_largest": keep_largest},
        extra={"manifest_path": data["manifest_path"]},
    )
    preprocessing = data["preprocessing"]
    return write_synthetic_set(
        out,
        images.numpy().astype(np.float32),
        masks.numpy(),
        intensity=preprocessing["intensity"],
        labels=_effective_labels(data["labels"], model),
        affine=reference_affine(preprocessing, data["train_cases"]),
        modality=preprocessing.get("modality", "image"),
        card=card,
        overwrite=overwrite,
        min_component_size=min_component_size,
        keep_largest=keep_largest,
    )


def _effective_labels(labels: dict[str, str], model: GenerativeModel) -> dict[str, str]:
    """A generator trained on binarised masks emits 0/1 only."""
    if model.codec.config.binarize:
        return {"0": labels.get("0", "background"), "1": "foreground"}
    return labels


@torch.no_grad()
def sample_arrays(checkpoint: str | Path, n: int, seed: int = 0, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """In-memory samples (images in [-1, 1], integer masks), for the demo and for evaluation."""
    model, _ = load_generator(checkpoint, device)
    images, masks = model.sample(n, seed=seed)
    return images.numpy(), masks.numpy()
