"""Command-line verbs of HA-GAN's extras: ``synthmed encode`` and ``synthmed grid``.

    synthmed encode --checkpoint C --input CASE_ID_or_NIFTI [--mask NIFTI] [--manifest M] --out DIR
    synthmed grid   --config FILE --grid GRID.yaml --out DIR [--set KEY=VALUE ...]

``encode`` writes ``DIR/latent.npy`` (z, float32 [latent_dim]), ``DIR/reconstruction/`` (the decoded
pair, nnU-Net layout with a dataset card, like ``synthmed sample``) and ``DIR/encode.json`` (input,
checkpoint, reconstruction L1 in network units).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from synthmed.data.dataset import load_case_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.fileio import atomic_directory, atomic_write_json
from synthmed.sample.card import build_card
from synthmed.sample.postprocess import images_to_network_units
from synthmed.sample.writers import reference_affine, write_synthetic_set
from synthmed.train.checkpoint import resolve_checkpoint


def _read_nifti(path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(nib.load(str(path)).dataobj)
    except Exception as err:  # nibabel raises several types for unreadable files
        raise UserError(f"{path}: cannot read the {what} NIfTI ({type(err).__name__}: {err})") from None


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
    from synthmed.sample.sampler import load_generator

    path = resolve_checkpoint(checkpoint)
    model, state = load_generator(path, device)
    if not hasattr(model, "reconstruct"):
        raise UserError(f"{path}: model {state['config']['model']['name']!r} has no encoder (encode needs HA-GAN)")
    data = state["data"]
    image, labels = load_input_pair(input_, mask, manifest or data["manifest_path"], data["preprocessing"]["intensity"],
                                    tuple(state["data_info"]["shape"]))
    real = model.codec.encode(image, labels).to(device)
    z, recon = model.reconstruct(real)
    rec_image, rec_mask = model.codec.decode(recon)
    card = build_card(model=state["config"]["model"]["name"], checkpoint_path=path, manifest_sha256=data["manifest_sha256"],
                      trained_on=data["trained_on"], seed=0, count=1,
                      config={"model": state["config"]["model"], "step": state["step"], "encoded_input": str(input_)})
    with atomic_directory(out, overwrite=overwrite) as tmp:
        np.save(tmp / "latent.npy", z[0].cpu().numpy().astype(np.float32))
        write_synthetic_set(tmp / "reconstruction", rec_image.cpu().numpy(), rec_mask.cpu().numpy(),
                            intensity=data["preprocessing"]["intensity"], labels=data["labels"],
                            affine=reference_affine(data["preprocessing"], data["train_cases"]),
                            modality=data["preprocessing"].get("modality", "image"), card=card, prefix="rec")
        atomic_write_json(tmp / "encode.json", {
            "input": str(input_), "checkpoint": str(path), "latent_dim": int(z.shape[1]),
            "recon_l1": float((recon - real).abs().mean()),
            "mask_agreement": float((rec_mask.cpu() == model.codec.decode(real.cpu())[1]).float().mean()),
        })
    return Path(out)


def add_encode_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("encode", help="map a real pair to its HA-GAN latent code and reconstruct it")
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its newest checkpoint)")
    p.add_argument("--input", required=True, help="case id of the manifest, or an image NIfTI (prepared geometry, original units)")
    p.add_argument("--mask", default=None, help="mask NIfTI of --input when it is a file")
    p.add_argument("--manifest", default=None, help="prepared folder or manifest.json (default: the model's training manifest)")
    p.add_argument("--out", required=True, help="output folder: latent.npy, reconstruction/, encode.json")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_encode)
    return p


def _run_encode(args) -> None:
    out = encode_to_folder(args.checkpoint, args.input, args.out, mask=args.mask, manifest=args.manifest,
                           overwrite=args.overwrite, device=args.device)
    print(f"wrote latent code and reconstruction to {out}")


def add_grid_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("grid", help="train every combination of a grid of config values and tabulate them")
    p.add_argument("--config", required=True, type=Path, help="base YAML preset (e.g. configs/hagan_32.yaml)")
    p.add_argument("--grid", required=True, type=Path, help="YAML: dotted config key -> list of values (configs/hagan_grid.yaml)")
    p.add_argument("--out", required=True, type=Path, help="grid folder: runs/run_NNN/, grid.csv, grid.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every run, e.g. --set train.steps=500 (repeatable)")
    p.set_defaults(func=_run_grid)
    return p


def _run_grid(args) -> None:
    from synthmed.train.grid import run_grid

    table = run_grid(args.config, args.grid, args.out, overrides=args.overrides)
    print(f"grid table: {table}")
