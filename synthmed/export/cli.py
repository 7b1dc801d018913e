"""``synthmed export nnunet --manifest PREP --synthetic SET ... --out DIR``: hand the data to nnU-Net v2."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command with its ``nnunet`` target."""
    p = subparsers.add_parser("export", help="write the real and synthetic cases for another tool (nnU-Net v2)")
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    nn = targets.add_parser(
        "nnunet", help="an nnU-Net v2 raw dataset: real + synthetic training cases, real test cases, splits",
        description="Write OUT/DatasetXXX_Name/ in nnU-Net v2 raw layout: the manifest's train and val cases "
                    "plus n cases of each synthetic set in imagesTr/labelsTr, the test cases in imagesTs/labelsTs, "
                    "dataset.json and splits_final.json (synthetic cases in training parts only). Real cases are "
                    "written at the prepared geometry with the intensity mapping undone.")
    nn.add_argument("--manifest", type=Path, required=True, help="prepared folder (or its manifest.json)")
    nn.add_argument("--synthetic", type=Path, action="append", default=[], metavar="SET",
                    help="synthetic set written by `synthmed sample` (repeatable; none: real cases only)")
    nn.add_argument("-n", type=int, default=None, help="synthetic cases per set, the first N by id (default: all)")
    nn.add_argument("--out", type=Path, required=True, help="folder holding nnU-Net datasets, e.g. $nnUNet_raw")
    nn.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id, 1..999 (default 501)")
    nn.add_argument("--name", help="dataset name (default: the manifest's first source name)")
    nn.add_argument("--folds", type=int, default=None,
                    help="folds in splits_final.json (default: the manifest's folds, else 5)")
    nn.add_argument("--overwrite", action="store_true", help="replace a dataset folder an earlier export wrote")
    nn.set_defaults(func=run_export_nnunet)
    return p


def run_export_nnunet(args: argparse.Namespace) -> None:
    from synthmed.export.nnunet import export_nnunet

    folder = export_nnunet(args.manifest, args.synthetic, args.out, n=args.n, dataset_id=args.dataset_id,
                           name=args.name, folds=args.folds, overwrite=args.overwrite)
    print(f"nnU-Net dataset: {folder}")
    print(f"next: export nnUNet_raw={folder.parent} (and nnUNet_preprocessed, nnUNet_results), then\n"
          f"  nnUNetv2_plan_and_preprocess -d {folder.name[7:10].lstrip('0')} --verify_dataset_integrity\n"
          f"  cp {folder / 'splits_final.json'} $nnUNet_preprocessed/{folder.name}/")
