"""Draw synthetic pairs from a checkpoint and write them with their dataset card.

Sampling reads only the checkpoint: it carries the model configuration, the generator (and its EMA),
and what the manifest said about the training data (labels, intensity mapping, geometry, case ids).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from synthmed.errors import UserError
from synthmed.fileio import check_output_folder, sha256_file
from synthmed.sample.synthetic_set import load_masks
from synthmed.models.base import GenerativeModel
from synthmed.sample.card import build_card
from synthmed.sample.postprocess import clean_mask
from synthmed.sample.writers import SAMPLE_KIND, reference_affine, write_synthetic_set
from synthmed.train.checkpoint import load_generator, resolve_checkpoint
from synthmed.train.run_history import trained_case_ids, trained_manifests
from synthmed.sample.mask_sources import Deformation, deformed_training_masks
from synthmed.train.loop import ema_half_life

log = logging.getLogger(__name__)


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
    deform_strength: float | None = None,  # mask-conditional models without given masks: scales the deformation
    sampler: str | None = None,  # diffusion models: sampling loop (ddpm, ddim, rflow; None: the model's default)
    steps: int | None = None,  # diffusion models: sampling steps (None: the model's default)
    seeds: list[int] | None = None,  # one pair per seed, each a function of its seed alone (instead of n)
    guidance: float | None = None,  # class-conditional diffusion: guidance scale (None: the run's guidance_scale)
) -> Path:
    """Sample a checkpoint and write the pairs with a dataset card.

    With ``n`` (and ``seed``) every pair comes from one random stream seeded by ``seed``, as before
    ``--seeds`` existed: pair k depends on ``seed`` and k. With ``seeds`` pair k is drawn from
    ``seeds[k]`` alone (its latent, noise, class and, for mask-conditional models, its mask source), so
    the same seed gives the same pair whatever other seeds are drawn, in any order or batch size; the
    card lists the seeds in case order.

    A mask-conditional generator (C-SG) renders images for masks read from ``masks_dir``, drawn from a
    mask-only generator (``mask_checkpoint``, M-SG: the MC-SG chain; the card then names both
    checkpoints, and its ``trained_on_case_ids`` is the union of what both generators saw), or, given
    neither, for its own training masks randomly deformed (the card lists each pair's source case and
    deformation seed).
    """
    inputs = [checkpoint, masks_dir, mask_checkpoint]
    check_output_folder(out, kind=SAMPLE_KIND, inputs=inputs, overwrite=overwrite)  # before the work
    if seeds is not None and (n is not None or not seeds):
        raise UserError("--seeds and -n are alternatives; give one" if seeds else "--seeds: no seeds given")
    device = sampling_device(device)
    model, state = load_generator(checkpoint, device)
    path = Path(state["path"])
    given, mask_source = _conditioning_masks(model, state, n, seed, masks_dir, mask_checkpoint, device, deform_strength,
                                             seeds=seeds)
    n = len(seeds) if seeds is not None else len(given) if given is not None else n
    if n is None or n < 1:
        raise UserError(f"-n must be at least 1, got {n}")
    classes = _requested_classes(model, state, n, class_name)
    model.check_sampling_options(truncation, given, classes, sampler, steps)
    model.set_guidance(guidance)
    options = dict(use_ema=use_ema, batch_size=batch_size, truncation=truncation, masks=given, classes=classes,
                   sampler=sampler, steps=steps)
    if seeds is None:
        images, masks = model.sample(n, seed=seed, **options)
    else:
        images, masks = model.sample_seeds(seeds, **options)
    ema_warning = _short_ema_warning(path, state) if use_ema else None
    if ema_warning:
        log.warning(ema_warning)
    data = state["data"]
    trained_on = sorted(set(trained_case_ids(state)) | set(mask_source.get("trained_on", [])))
    masks = clean_masks(masks.numpy(), min_component_size, keep_largest)
    empty = empty_mask_warning(masks)
    card = build_card(
        model=state["config"]["model"]["name"],
        checkpoint_path=path,
        manifest_sha256=data["manifest_sha256"],
        trained_on=trained_on,
        seed=seed if seeds is None else None,
        seeds=seeds,
        count=n,
        config={"model": state["config"]["model"], "step": state["step"], "use_ema": use_ema,
                "truncation": truncation, "class": class_name, "sampler": sampler, "steps": steps, "min_component_size": min_component_size, "keep_largest": keep_largest,
                "guidance": model.guidance_scale if model.capabilities.guidance else None,
                "masks": {k: v for k, v in mask_source.items() if k != "trained_on"} or None},
        extra={"manifest_path": data["manifest_path"], "trained_on_manifests": trained_manifests(state)},
        warnings=[w for w in (empty, ema_warning) if w],
    )
    preprocessing = data["preprocessing"]
    is_2d = len(state["data_info"]["shape"]) == 2
    return write_synthetic_set(
        out,
        images.numpy().astype(np.float32),
        masks,
        intensity=preprocessing["intensity"],
        labels=_effective_labels(data["labels"], model),
        label_values=None if model.codec.config.binarize else data.get("label_values"),
        affine=None if is_2d else reference_affine(preprocessing, data["train_cases"]),
        modality=preprocessing.get("modality", "image"),
        card=card,
        overwrite=overwrite,
        inputs=inputs,
        bit_depth=int(preprocessing.get("bit_depth", 8)),
    )


def sampling_device(device: str) -> str:
    """The ``--device`` of sample and encode, checked: "cpu", or "cuda" / "cuda:N" where CUDA is present.

    Raises:
        UserError: not a device name, or a CUDA device on a machine without one.
    """
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"--device {device}: not a device (use cpu or cuda)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available (use --device cpu)")
    if kind not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: sampling runs on cpu or cuda")
    return device


def clean_masks(masks: np.ndarray, min_component_size: int | None, keep_largest: bool) -> np.ndarray:
    """Every mask through `clean_mask` (components under the size dropped, or all but the largest)."""
    if not min_component_size and not keep_largest:
        return masks
    return np.stack([clean_mask(m, min_size=min_component_size, keep_largest=keep_largest) for m in masks])


def empty_mask_warning(masks: np.ndarray) -> str | None:
    """``"K of N masks are empty ..."``, logged at WARNING, when a written set would hold masks without foreground."""
    empty = int((masks.reshape(len(masks), -1) == 0).all(axis=1).sum())
    if not empty:
        return None
    message = (f"{empty} of {len(masks)} masks are empty (background only); a segmentation model learns nothing "
               "about the structure from those pairs")
    log.warning(message)
    return message


def _short_ema_warning(path: Path, state: dict) -> str | None:
    """A warning when the run saw fewer images than its EMA half-life at the end: the EMA generator is then
    still mostly the random initial weights (runs without ramp-up, ``train.ema_rampup: null`` or older runs)."""
    train = state["config"]["train"]
    images_seen = state["step"] * train["batch_size"]
    half_life = ema_half_life(images_seen, train["ema_kimg"], train.get("ema_rampup"))
    if images_seen >= half_life:
        return None
    return (f"{path}: the run saw {images_seen} training images, fewer than its EMA half-life ({half_life:.0f} "
            "images), so its EMA generator is still mostly the random initial weights; sample with --no-ema "
            "or train longer")


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
                        mask_checkpoint: str | Path | None, device: str, deform_strength: float | None = None,
                        seeds: list[int] | None = None) -> tuple[torch.Tensor | None, dict]:
    """Masks to render images for (or None) and a record of where they came from (its ``kind``).

    A mask-conditional model renders for the masks of ``masks_dir``, for masks drawn from the mask-only
    generator ``mask_checkpoint``, or, given neither, for its own training masks randomly deformed
    (`synthmed.sample.mask_sources`; ``deform_strength`` scales the deformation, 0: the masks as they are).
    With ``seeds``, mask k comes from ``seeds[k]`` alone: the folder's mask number ``seeds[k]`` (sorted by
    name), the mask generator's pair of seed ``seeds[k] + 1_000_003``, or the training mask and
    deformation of that seed.

    Raises:
        UserError: masks a model cannot use, unreadable or mismatched masks, a mask checkpoint whose model
            does not draw masks on its own, or training masks that are gone or changed.
    """
    if masks_dir is not None and mask_checkpoint is not None:
        raise UserError("--masks and --mask-checkpoint are alternatives; give one")
    if masks_dir is None and mask_checkpoint is None:
        if not model.capabilities.mask_conditional:
            if deform_strength is not None:
                raise UserError("--deform-strength: only for a mask-conditional model sampled without --masks")
            return None, {}
        if n is None and seeds is None:
            raise UserError("-n is needed (how many of the generator's training masks to deform and render)")
        if deform_strength is not None and deform_strength < 0:
            raise UserError(f"--deform-strength must be at least 0, got {deform_strength}")
        deformation = Deformation().scaled(1.0 if deform_strength is None else deform_strength)
        masks, record = deformed_training_masks(state["data"], n, seed, model.codec.config.binarize, deformation,
                                                seeds=seeds)
        return torch.from_numpy(masks), record
    if deform_strength is not None:
        raise UserError("--deform-strength: deforms the generator's training masks; it does not apply to "
                        "--masks or --mask-checkpoint")
    model.check_sampling_options(masks=torch.zeros(0))  # refuses given masks for models that cannot use them
    shape = tuple(state["data_info"]["shape"])
    if masks_dir is not None:
        masks, names = load_masks(masks_dir, shape, model.codec.num_labels)
        if seeds is not None:
            return _masks_of_seeds(masks, names, seeds, masks_dir)
        if n is not None and n > len(masks):
            raise UserError(f"{masks_dir}: -n {n} but only {len(masks)} masks")
        masks = masks[:n] if n is not None else masks
        return torch.from_numpy(masks), {"kind": "folder", "folder": str(Path(masks_dir).resolve()),
                                         "names": names[: len(masks)]}
    if n is None and seeds is None:
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
    if seeds is None:
        _, masks = mask_model.sample(n, seed=seed + 1_000_003)
    else:
        _, masks = mask_model.sample_seeds([s + 1_000_003 for s in seeds])
    record = {"kind": "mask_generator", "checkpoint": {"path": str(mask_path), "sha256": sha256_file(mask_path)},
              "model": mask_state["config"]["model"]["name"], "trained_on": trained_case_ids(mask_state)}
    return masks, record


def _masks_of_seeds(masks: np.ndarray, names: list[str], seeds: list[int],
                    masks_dir: str | Path) -> tuple[torch.Tensor, dict]:
    """``--masks DIR --seeds``: seed k renders the folder's mask number k (sorted by name).

    Raises:
        UserError: a seed beyond the folder's masks.
    """
    beyond = [s for s in seeds if not 0 <= s < len(masks)]
    if beyond:
        raise UserError(f"{masks_dir}: --seeds with --masks picks mask number <seed> of the folder's {len(masks)} "
                        f"masks (0..{len(masks) - 1}); seeds {beyond[:5]} are out of range")
    record = {"kind": "folder", "folder": str(Path(masks_dir).resolve()), "names": [names[s] for s in seeds]}
    return torch.from_numpy(masks[seeds]), record


def parse_seeds(text: str) -> list[int]:
    """``"0-99,200"`` -> [0, 1, ..., 99, 200]: comma-separated seeds and inclusive ranges, in the order given.

    Raises:
        UserError: not such a list, a range that runs backwards, a negative seed or a seed given twice.
    """
    seeds: list[int] = []
    for item in text.split(","):
        low, dash, high = item.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise UserError(f"--seeds {text!r}: expected seeds and ranges like 0-99,200; {item.strip()!r} is neither") from None
        if last < first:
            raise UserError(f"--seeds {text!r}: the range {item.strip()} runs backwards")
        seeds.extend(range(first, last + 1))
    repeated = sorted(s for s, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise UserError(f"--seeds {text!r}: seeds {repeated[:5]} are given twice (each seed is one pair)")
    return seeds


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
