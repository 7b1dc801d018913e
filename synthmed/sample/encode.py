"""Encode a real pair into a generator's latent space and reconstruct it (HA-GAN's encoders).

``encode_to_folder`` writes ``DIR/latent.npy`` (z, float32 [latent_dim]), ``DIR/reconstruction/`` (the
decoded pair, nnU-Net layout with a dataset card, like ``synthmed sample``) and ``DIR/encode.json``
(input, checkpoint, reconstruction L1 in network units).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthmed.data.checks import read_nifti
from synthmed.data.dataset import load_case_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.fileio import atomic_directory, atomic_write_json, check_output_folder
from synthmed.sample.card import build_card
from synthmed.sample.postprocess import channel_intensities, images_to_network_units
from synthmed.sample.writers import reference_affine, write_synthetic_set
from synthmed.train.checkpoint import load_generator, resolve_checkpoint
from synthmed.train.run_history import trained_case_ids


def _read_nifti(path: Path, what: str) -> np.ndarray:
    problems: list[str] = []
    read = read_nifti(path, problems)
    if read is None:
        raise UserError(f"{what}: {problems[0]}")
    return read[0]


def load_input_pair(input_: str, mask: str | None, manifest_path: str, intensity: dict, shape: tuple[int, ...]):
    """(image [1,1,*S] in [-1, 1], mask [1,*S]) from a manifest case id or NIfTI files of the prepared shape.

    Raises:
        UserError: unknown case, unreadable file, missing mask, or a shape other than the model's.
    """
    path = Path(input_)
    if not path.suffix and not path.exists():  # a case id of the manifest
        manifest = load_manifest(manifest_path)
        image, labels = load_case_arrays(manifest, input_)
        return torch.from_numpy(image[None].astype(np.float32)), torch.from_numpy(labels[None].astype(np.int64))
    if mask is None:
        raise UserError(f"{path}: encoding a NIfTI image needs its mask too (--mask); the model generates pairs")
    if len(channel_intensities(intensity)) > 1:
        raise UserError(f"{path}: the model takes {len(channel_intensities(intensity))} image channels; "
                        f"encode a multi-channel case by its case id in the manifest")
    image = _read_nifti(path, "image").astype(np.float32)
    labels = _read_nifti(Path(mask), "mask")
    for name, array in ((path, image), (Path(mask), labels)):
        if tuple(array.shape) != tuple(shape):
            raise UserError(f"{name}: shape {list(array.shape)}, the model expects {list(shape)} "
                            f"(prepare the volume like the training data first)")
    if not np.isfinite(image).all():
        raise UserError(f"{path}: image has NaN or infinite voxels")
    network = images_to_network_units(image, intensity)
    return torch.from_numpy(network[None, None]), torch.from_numpy(np.rint(labels)[None].astype(np.int64))


def encode_to_folder(
    checkpoint: str | Path,  # checkpoint file or run folder
    input_: str,  # case id of the manifest, or an image NIfTI in the prepared geometry and original units
    out: str | Path,  # folder to create
    mask: str | None = None,  # mask NIfTI (needed with an image NIfTI)
    manifest: str | None = None,  # manifest for case ids; default: the one the model was trained on
    overwrite: bool = False,
    device: str = "cpu",
) -> Path:
    """Map a real pair to its latent code with HA-GAN's encoders and write the code and its reconstruction."""
    inputs = [checkpoint, mask, manifest, input_ if Path(input_).exists() else None]  # input_ may be a case id
    check_output_folder(out, kind="encode", inputs=inputs, overwrite=overwrite)
    path = resolve_checkpoint(checkpoint)
    model, state = load_generator(path, device)
    if not model.capabilities.encoder:
        raise UserError(f"{path}: model {state['config']['model']['name']!r} has no encoder (encode needs HA-GAN)")
    data = state["data"]
    image, labels = load_input_pair(input_, mask, manifest or data["manifest_path"], data["preprocessing"]["intensity"],
                                    tuple(state["data_info"]["shape"]))
    real = model.codec.encode(image, labels).to(device)
    z, recon = model.reconstruct(real)
    rec_image, rec_mask = model.codec.decode(recon)
    card = build_card(model=state["config"]["model"]["name"], checkpoint_path=path, manifest_sha256=data["manifest_sha256"],
                      trained_on=trained_case_ids(state), seed=0, count=1,
                      config={"model": state["config"]["model"], "step": state["step"], "encoded_input": str(input_)})
    with atomic_directory(out, kind="encode", inputs=inputs, overwrite=overwrite) as tmp:
        np.save(tmp / "latent.npy", z[0].cpu().numpy().astype(np.float32))
        write_synthetic_set(tmp / "reconstruction", rec_image.cpu().numpy(), rec_mask.cpu().numpy(),
                            intensity=data["preprocessing"]["intensity"], labels=data["labels"],
                            label_values=data.get("label_values"),
                            affine=reference_affine(data["preprocessing"], data["train_cases"]),
                            modality=data["preprocessing"].get("modality", "image"), card=card, prefix="rec")
        atomic_write_json(tmp / "encode.json", {
            "input": str(input_), "checkpoint": str(path), "latent_dim": int(z.shape[1]),
            "recon_l1": float((recon - real).abs().mean()),
            "mask_agreement": float((rec_mask.cpu() == model.codec.decode(real.cpu())[1]).float().mean()),
        })
    return Path(out)
