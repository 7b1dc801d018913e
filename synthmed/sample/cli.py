"""Command-line verbs of the sample stage.

    synthmed sample --checkpoint C -n N --out DIR         draw synthetic pairs (NIfTI or PNG + dataset card)
    synthmed sample --checkpoint C --seeds 0-99,200 ...   one pair per seed, each regenerable on its own
    synthmed sample --checkpoint RUN --best ...           from the run's best checkpoint by its fidelity figure
    synthmed encode --checkpoint C --input CASE_ID_or_NIFTI [--mask NIFTI] [--manifest M] --out DIR
"""

from __future__ import annotations

import argparse

from synthmed.errors import UserError
from synthmed.sample.encode import encode_to_folder
from synthmed.train.checkpoint import resolve_best_checkpoint
from synthmed.sample.sampler import parse_seeds, sample_to_folder, sampling_device


def add_sample_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sample", help="draw synthetic image/mask pairs from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its newest checkpoint)")
    p.add_argument("--best", action="store_true",
                   help="with a run folder as --checkpoint: its best checkpoint by the fidelity figure "
                        "(checkpoints/best.pt, kept when trained with train.fidelity_every) instead of the newest")
    p.add_argument("-n", type=int, default=None,
                   help="number of pairs, all drawn from one random stream seeded by --seed (required unless "
                        "--seeds or --masks gives them)")
    p.add_argument("--seeds", default=None, metavar="LIST",
                   help="one pair per seed, e.g. 0-99,200 (StyleGAN2-ADA's --seeds): pair k depends on its seed "
                        "alone, so a seed gives the same pair whatever else is drawn; instead of -n and --seed")
    p.add_argument("--out", required=True, help="output folder (nnU-Net layout: imagesTr/, labelsTr/, dataset.json, card.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stream -n draws from (default 0)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its moving average")
    p.add_argument("--min-component-size", type=int, default=None, metavar="K", help="drop mask components under K voxels")
    p.add_argument("--keep-largest", action="store_true", help="keep only the largest mask component per label")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                   help="truncation psi for StyleGAN2 (1 = none; lower = more typical, less diverse)")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="mask-conditional models (C-SG): render images for these masks (a folder or a synthetic set; "
                        "default: the generator's training masks, randomly deformed)")
    p.add_argument("--mask-checkpoint", default=None, metavar="RUN",
                   help="MC-SG: draw the masks from this mask-only generator (M-SG run or checkpoint)")
    p.add_argument("--deform-strength", type=float, default=None, metavar="S",
                   help="mask-conditional models without --masks: images are rendered for the generator's training "
                        "masks, randomly deformed (rotation 10 deg, scale 10 %%, small elastic, each times S; "
                        "default 1, 0 = the training masks as they are)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="class-conditional models (HA-GAN with num_classes): draw every pair of this class "
                        "(default: classes drawn uniformly)")
    p.add_argument("--sampler", default=None, choices=["ddpm", "ddim", "rflow"],
                   help="diffusion models: sampling loop (default: the model's; ddpm/ddim after DDPM training, rflow after rectified flow)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="diffusion models: sampling steps (default: the model's sample_steps; fewer = faster, coarser)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="class-conditional diffusion models: classifier-free guidance scale (default: the run's "
                        "guidance_scale; 1 = conditional only, higher = stronger class guidance)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_sample)
    return p


def _run_sample(args) -> None:
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None and args.n is not None:
        raise UserError("--seeds and -n are alternatives; give one")
    if args.n is None and args.masks is None and seeds is None:
        raise UserError("-n or --seeds is required (which pairs to draw)")
    if args.n is not None and args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    checkpoint = resolve_best_checkpoint(args.checkpoint) if args.best else args.checkpoint
    out = sample_to_folder(checkpoint, args.n, args.out, seed=args.seed, batch_size=args.batch_size,
                           use_ema=not args.no_ema, min_component_size=args.min_component_size,
                           keep_largest=args.keep_largest, overwrite=args.overwrite, device=args.device,
                           truncation=args.trunc, masks_dir=args.masks, mask_checkpoint=args.mask_checkpoint,
                           class_name=args.class_name, deform_strength=args.deform_strength,
                             sampler=args.sampler, steps=args.steps, seeds=seeds, guidance=args.guidance)
    count = len(list((out / "labelsTr").iterdir()))
    print(f"wrote {count} synthetic pairs to {out}")


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
                           overwrite=args.overwrite, device=sampling_device(args.device))
    print(f"wrote latent code and reconstruction to {out}")
