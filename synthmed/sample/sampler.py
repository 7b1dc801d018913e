"""Draw synthetic pairs from a checkpoint and write them with their dataset card.

Sampling reads only the checkpoint: it carries the model configuration, the generator (and its EMA),
and what the manifest said about the training data (labels, intensity mapping, geometry, case ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthmed.errors import UserError
from synthmed.fileio import sha256_file
from synthmed.sample.synthetic_set import load_masks
from synthmed.models.base import GenerativeModel
from synthmed.sample.card import build_card
from synthmed.sample.writers import reference_affine, write_synthetic_set
from synthmed.train.checkpoint import load_generator, resolve_checkpoint


def sample_to_folder(
    checkpoint: str | Path,  # checkpoint file, or a run folder (its newest checkpoint)
    n: int | None,  # number of pairs (None: one per given mask)
    out: str | Path,  # folder to create (nnU-Net layout + card.json)
    seed: int = 0,
    batch_size: int = 8,  # generation batch; does not change the result
    use_ema: bool = True,  # sample from the EMA generator (recommended)
    min_component_size: int | None = None,  # drop mask components smaller than this many voxels
    keep_largest: bool = False,  # keep only the largest component per label
    overwrite: bool = False,
    device: str = "cpu",
    truncation: float = 1.0,  # StyleGAN2's psi (1 = no truncation)
    masks_dir: str | Path | None = None,  # mask-conditional models: render images for these masks
    mask_checkpoint: str | Path | None = None,  # MC-SG: draw the masks from this mask-only generator
    class_name: str | None = None,  # class-conditional models: every pair of this class (None: drawn uniformly)
    sampler: str | None = None,  # diffusion models: sampling loop (ddpm, ddim, rflow; None: the model's default)
    steps: int | None = None,  # diffusion models: sampling steps (None: the model's default)
) -> Path:
    """Sample a checkpoint and write the pairs with a dataset card.

    A mask-conditional generator (C-SG) renders images for masks read from ``masks_dir`` or drawn
    from a mask-only generator (``mask_checkpoint``, M-SG): the MC-SG chain. The card then names
    both checkpoints, and its ``trained_on_case_ids`` is the union of what both generators saw.
    """
    path = resolve_checkpoint(checkpoint)
    model, state = load_generator(path, device)
    given, mask_source = _conditioning_masks(model, state, n, seed, masks_dir, mask_checkpoint, device)
    n = len(given) if given is not None else n
    if n is None or n < 1:
        raise UserError(f"-n must be at least 1, got {n}")
    classes = _requested_classes(model, state, n, class_name)
    model.check_sampling_options(truncation, given, classes, sampler, steps)
    images, masks = model.sample(n, seed=seed, use_ema=use_ema, batch_size=batch_size, truncation=truncation,
                                 masks=given, classes=classes, sampler=sampler, steps=steps)
    data = state["data"]
    trained_on = sorted(set(data["trained_on"]) | set(mask_source.get("trained_on", [])))
    card = build_card(
        model=state["config"]["model"]["name"],
        checkpoint_path=path,
        manifest_sha256=data["manifest_sha256"],
        trained_on=trained_on,
        seed=seed,
        count=n,
        config={"model": state["config"]["model"], "step": state["step"], "use_ema": use_ema,
                "truncation": truncation, "class": class_name, "sampler": sampler, "steps": steps, "min_component_size": min_component_size, "keep_largest": keep_largest,
                "masks": {k: v for k, v in mask_source.items() if k != "trained_on"} or None},
        extra={"manifest_path": data["manifest_path"]},
    )
    preprocessing = data["preprocessing"]
    is_2d = len(state["data_info"]["shape"]) == 2
    return write_synthetic_set(
        out,
        images.numpy().astype(np.float32),
        masks.numpy(),
        intensity=preprocessing["intensity"],
        labels=_effective_labels(data["labels"], model),
        affine=None if is_2d else reference_affine(preprocessing, data["train_cases"]),
        modality=preprocessing.get("modality", "image"),
        card=card,
        overwrite=overwrite,
        min_component_size=min_component_size,
        keep_largest=keep_largest,
        bit_depth=int(preprocessing.get("bit_depth", 8)),
    )


def _requested_classes(model: GenerativeModel, state: dict, n: int, class_name: str | None) -> torch.Tensor | None:
    """Class indices for ``--class NAME``, named as in the training run's ``data.classes``.

    Raises:
        UserError: a class-conditional model without a class of that name (an unconditional model
            refuses any class in `GenerativeModel.check_sampling_options`).
    """
    if class_name is None:
        return None
    names = state["data"].get("classes") or []
    if model.capabilities.class_conditional and class_name not in names:
        raise UserError(f"--class {class_name!r}: not one of this model's classes {names}")
    return torch.full((n,), names.index(class_name) if class_name in names else 0, dtype=torch.long)


def _conditioning_masks(model: GenerativeModel, state: dict, n: int | None, seed: int, masks_dir: str | Path | None,
                        mask_checkpoint: str | Path | None, device: str) -> tuple[torch.Tensor | None, dict]:
    """Masks to render images for (or None) and a record of where they came from.

    Raises:
        UserError: masks a model needs but lacks or cannot use, unreadable or mismatched masks, or a mask
            checkpoint whose model does not draw masks on its own.
    """
    if masks_dir is not None and mask_checkpoint is not None:
        raise UserError("--masks and --mask-checkpoint are alternatives; give one")
    if masks_dir is None and mask_checkpoint is None:
        if model.capabilities.mask_conditional:
            raise UserError(f"{state['path']}: this generator renders images for given masks; pass --masks DIR "
                            "(a folder of masks or a synthetic set) or --mask-checkpoint RUN (a mask-only generator)")
        return None, {}
    model.check_sampling_options(masks=torch.zeros(0))  # refuses given masks for models that cannot use them
    shape = tuple(state["data_info"]["shape"])
    if masks_dir is not None:
        masks, names = load_masks(masks_dir, shape, model.codec.num_labels)
        if n is not None and n > len(masks):
            raise UserError(f"{masks_dir}: -n {n} but only {len(masks)} masks")
        masks = masks[:n] if n is not None else masks
        return torch.from_numpy(masks), {"folder": str(Path(masks_dir).resolve()), "names": names[: len(masks)]}
    if n is None:
        raise UserError("-n is needed with --mask-checkpoint (how many masks to draw)")
    mask_path = resolve_checkpoint(mask_checkpoint)
    mask_model, mask_state = load_generator(mask_path, device)
    if mask_model.capabilities.mask_conditional:
        raise UserError(f"--mask-checkpoint {mask_path}: this generator renders images for given masks; "
                        f"the masks must come from one that draws them (M-SG, or a pair generator)")
    if tuple(mask_state["data_info"]["shape"]) != shape:
        raise UserError(f"{mask_path}: makes masks of shape {mask_state['data_info']['shape']}, "
                        f"the image generator needs {list(shape)}")
    # the mask generator gets its own seed stream, so image noise and mask noise are independent
    _, masks = mask_model.sample(n, seed=seed + 1_000_003)
    record = {"checkpoint": {"path": str(mask_path), "sha256": sha256_file(mask_path)},
              "model": mask_state["config"]["model"]["name"], "trained_on": mask_state["data"]["trained_on"]}
    return masks, record


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
