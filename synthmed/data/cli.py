"""Sub-commands `synthmed prepare` and `synthmed analyze`.

`add_prepare_parser(subparsers)` and `add_analyze_parser(subparsers)` add them to the main parser;
each sets ``func`` to a callable taking the parsed arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from synthmed.errors import UserError


def _spacing(values: list[str]) -> tuple[float, float, float] | None:
    if len(values) == 1 and values[0].lower() == "none":
        return None
    if len(values) == 1:
        values = values * 3
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise UserError(f"--spacing {' '.join(values)}: expected 3 numbers (mm) or 'none'") from None
    if len(out) != 3:
        raise UserError(f"--spacing {' '.join(values)}: expected 3 numbers (mm) or 'none'")
    return out  # type: ignore[return-value]


AXIS_NUMBERS = {"0": "sagittal", "1": "coronal", "2": "axial"}  # RAS array axes


def _slice_axis(text: str) -> str:
    """'axial' | 'coronal' | 'sagittal', or the RAS axis number 2 | 1 | 0."""
    name = AXIS_NUMBERS.get(text.strip(), text.strip().lower())
    if name not in AXIS_NUMBERS.values():
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected axial, coronal, sagittal or the RAS axis number 2, 1, 0"
        )
    return name


def parse_labels_option(text: str) -> dict[int, str]:
    """'0,1,2' or '0=background,1=tumour' -> {0: 'background', 1: 'label_1' or its name}."""
    out: dict[int, str] = {}
    for item in text.split(","):
        key, _, name = item.strip().partition("=")
        try:
            k = int(key)
        except ValueError:
            raise UserError(f"--labels {text!r}: {item!r} is not an integer label (use e.g. 0,1,2)") from None
        if k < 0 or k > 255:
            raise UserError(f"--labels {text!r}: label {k} outside 0..255")
        out[k] = name.strip() or ("background" if k == 0 else f"label_{k}")
    return out


def run_prepare(args: argparse.Namespace) -> int:
    from synthmed.data.prepare import make_options, prepare_dataset

    options = make_options(
        spacing=_spacing(args.spacing) if args.spacing is not None else None,
        shape=tuple(args.shape) if args.shape else None,
        shape_mode=args.shape_mode,
        intensity=args.intensity,
        window=tuple(args.window) if args.window else None,
        percentiles=tuple(args.percentiles),
        margin=args.margin,
        crop=args.crop,
        modality=args.modality,
        labels=parse_labels_option(args.labels) if args.labels else None,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        folds=args.folds,
        group_regex=args.group_regex,
        seed=args.seed,
        split_file=args.split_file,
        mask_suffix=args.mask_suffix,
        crop_to_image=args.crop_to_image,
        channels=args.channels,
        mask_threshold=args.mask_threshold,
        slices=args.slices,
        mosaic=tuple(args.mosaic) if args.mosaic else None,
        foreground_slices_only=args.foreground_slices_only,
        max_slices=args.max_slices,
    )
    prepare_dataset(args.inputs, args.out, options, overwrite=args.overwrite)
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from synthmed.data.analyze import analyze_dataset

    analyze_dataset(args.inputs, out_dir=args.out, overwrite=args.overwrite, mask_suffix=args.mask_suffix)
    return 0


def add_prepare_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare",
        allow_abbrev=False,  # else --crop none would be read as --crop-to-image none
        help="check, preprocess and split a raw dataset into a cached dataset with a manifest",
        description="Check every case, preprocess and write OUT/manifest.json and OUT/cases/<id>.npz with a "
        "seeded, group-aware split. 3D NIfTI volumes: RAS, spacing, intensity to [-1, 1], foreground crop, "
        "shape. 2D images (PNG, JPEG, TIFF; found from the file types): intensity to [-1, 1], resize or "
        "pad to --shape H W. --slices / --mosaic cut 3D volumes into 2D cases.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="MSD/nnU-Net folder, folder with images/ and labels/ (or masks/), or datalist .json")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--spacing", nargs="+", default=None, metavar="MM",
                   help="target voxel size in mm (3 numbers, or one for all axes), or 'none' to keep (default: none)")
    p.add_argument("--shape", nargs="+", type=int, default=None, metavar="N",
                   help="target shape: D H W for 3D, H W for 2D (default: 64 64 64; slices 64 64; 2D images "
                   "their common size, required when sizes differ)")
    p.add_argument("--shape-mode", choices=["pad_crop", "resize", "pad_resize"], default=None,
                   help="pad_crop: centred pad/crop (keeps spacing); resize (changes spacing; 2D: bilinear "
                   "antialiased images, nearest masks); pad_resize: pad 2D to a square, then resize "
                   "(keeps the aspect ratio) (default: pad_crop for 3D and slices, resize for 2D images)")
    p.add_argument("--intensity", choices=["window", "percentile"], default=None,
                   help="fixed window or per-case percentiles (default: window for CT and 2D images, else percentile)")
    p.add_argument("--window", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                   help="raw values mapped to -1 and 1 in window mode (default: -1024 600 for 3D; 2D: 0 255 "
                   "for 8-bit, the data's min and max for 16-bit)")
    p.add_argument("--percentiles", nargs=2, type=float, default=[0.5, 99.5], metavar=("LOWER", "UPPER"),
                   help="per-case percentiles mapped to -1 and 1 in percentile mode (default: 0.5 99.5)")
    p.add_argument("--crop", choices=["foreground", "nonzero", "none"], default="foreground",
                   help="3D volumes and slices: crop to the mask's bounding box (foreground), to the image's "
                   "nonzero voxels (nonzero: the body or a skull-stripped brain, as nnU-Net), or not at all "
                   "(none), before --shape (default: foreground)")
    p.add_argument("--margin", type=int, default=4, help="voxels kept around the crop's bounding box (default: 4)")
    p.add_argument("--modality", default=None, help="CT, MRI, ... (default: from dataset.json, else CT)")
    p.add_argument("--labels", default=None,
                   help="declared labels, e.g. 0,1,2 or 0=background,1=tumour (default: from dataset.json, else those seen)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="fraction of cases for test (default: 0.2)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of cases for validation (default: 0.1)")
    p.add_argument("--folds", type=int, default=5, help="k folds of the train cases, 0 for none (default: 5)")
    p.add_argument("--group-regex", default=None,
                   help="regex on the case id whose first capture group is the group key (e.g. patient); "
                   "2D case ids are file names without suffix, slices are matched by their volume id")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    p.add_argument("--split-file", type=Path, default=None, metavar="JSON",
                   help="given splits: {\"train\": [ids], \"val\": [ids], \"test\": [ids]} (any of them) or "
                   "nnU-Net's splits_final.json (its folds); cases it leaves out are split with --seed")
    p.add_argument("--mask-suffix", default=None, metavar="SUFFIX",
                   help="masks are named <image name>SUFFIX, e.g. _Mask for 000_HC.png + 000_HC_Mask.png "
                   "(images and masks may then share one folder)")
    p.add_argument("--crop-to-image", action="store_true",
                   help="crop masks that exceed their image by at most one voxel per axis (recorded in the manifest)")
    g = p.add_argument_group("2D")
    g.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="2D image channels: 1 turns colour into luminance, 3 repeats grayscale (default: 3 "
                   "if any image has colour, else 1)")
    g.add_argument("--mask-threshold", type=float, default=None, metavar="T",
                   help="masks are binary: label 1 where the value is above T (e.g. 127 for 8-bit masks with "
                   "stray grey values, 32767 for 16-bit); JPEG masks: luminance above T (default 127, and too "
                   "many mid-grey pixels are then accepted)")
    g.add_argument("--slices", type=_slice_axis, default=None, metavar="AXIS",
                   help="cut 3D volumes into one 2D case per slice along AXIS: axial, coronal, sagittal "
                   "(or RAS axis 2, 1, 0); slices of one volume share its group")
    g.add_argument("--mosaic", nargs=2, type=int, default=None, metavar=("ROWS", "COLS"),
                   help="one 2D case per volume: its central ROWS x COLS slices (along --slices, default "
                   "axial) tiled into --shape H W (each tile H/ROWS x W/COLS)")
    g.add_argument("--foreground-slices-only", action="store_true",
                   help="keep only slices holding labelled voxels (with --slices or --mosaic)")
    g.add_argument("--max-slices", type=int, default=None, metavar="N",
                   help="at most N slices per volume, evenly spaced (with --slices)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run_prepare)
    return p


def add_analyze_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="summarise raw datasets (or a prepared folder) per source: shapes, spacing, intensities, labels",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="dataset folder, datalist .json, or a prepared folder (with manifest.json)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="also write analysis.json and PNG plots to this folder")
    p.add_argument("--mask-suffix", default=None, metavar="SUFFIX",
                   help="masks are named <image name>SUFFIX (as for prepare)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run_analyze)
    return p
