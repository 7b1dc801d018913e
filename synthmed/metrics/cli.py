"""The ``synthmed evaluate`` sub-command (wired into synthmed/cli.py by `add_evaluate_parser`)."""

from __future__ import annotations

import argparse

from synthmed.metrics.channels import CHANNEL_MODES
from synthmed.metrics.evaluate import EvaluateOptions, evaluate_synthetic_set, format_table
from synthmed.metrics.extractors import available_feature_extractors
from synthmed.metrics.extractors.base import DEVICES

DEFAULTS = EvaluateOptions()  # the one source of the CLI's defaults


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="fidelity, diversity and memorisation of a synthetic set",
                              description="Compare a synthetic set with real cases: Fréchet distance, KID, precision/recall, "
                                          "MS-SSIM, intensity and mask statistics, memorisation audit, plots.")
    p.add_argument("--real", required=True, metavar="MANIFEST[:split] | DIR",
                   help="prepared manifest (or folder) and split (default train), or a folder of image/mask pairs")
    p.add_argument("--synthetic", required=True, metavar="DIR",
                   help="synthetic set: a `synthmed sample` folder or another tool's pairs (imagesTr/+labelsTr/ or images/+masks/, "
                        "NIfTI or PNG), with or without card.json")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: metrics.json and PNGs")
    p.add_argument("--features", nargs="+", default=list(DEFAULTS.features), choices=available_feature_extractors(),
                   help="feature spaces (3D names also select their 2D twins for 2D data)")
    p.add_argument("--bootstrap", type=int, default=DEFAULTS.n_bootstrap, help="bootstrap resamples for confidence intervals")
    p.add_argument("--kid-subsets", type=int, default=DEFAULTS.kid_subsets)
    p.add_argument("--kid-subset-size", type=int, default=DEFAULTS.kid_subset_size, help="capped at the smaller set")
    p.add_argument("--k", type=int, default=DEFAULTS.prdc_k, help="k of precision/recall/density/coverage")
    p.add_argument("--copy-ratio", type=float, default=DEFAULTS.copy_ratio, help="flag a sample whose nearest-training distance is below this x the typical real one")
    p.add_argument("--top-k", type=int, default=DEFAULTS.top_k_pairs, help="closest synthetic/training pairs drawn")
    p.add_argument("--tsne-perplexity", type=float, default=DEFAULTS.tsne_perplexity)
    p.add_argument("--tsne-learning-rate", type=float, default=DEFAULTS.tsne_learning_rate)
    p.add_argument("--ae-steps", type=int, default=DEFAULTS.ae_steps, help="training steps of the autoencoder feature space")
    p.add_argument("--offline", action="store_true", help="never download weights; use only the cache")
    p.add_argument("--no-card", action="store_true", help="do not write headline figures into the set's card.json")
    p.add_argument("--channels", choices=CHANNEL_MODES, default=DEFAULTS.channels,
                   help="multi-channel images: auto (stacked where a feature space takes C channels, e.g. the "
                        "autoencoder; per channel otherwise), per_channel, or stacked; intensity is always per channel")
    p.add_argument("--device", choices=DEVICES, default=DEFAULTS.device, help="torch feature extractors (auto: cuda when available)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers, help="radiomics worker processes (default: the CPU cores)")
    p.add_argument("--cache-dir", default=DEFAULTS.cache_dir, metavar="DIR",
                   help="real-set feature cache (default: $SYNTHMED_CACHE/features or ~/.cache/synthmed/features)")
    p.add_argument("--no-cache", action="store_true", help="extract the real features again and store nothing")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_evaluate)
    return p


def run_evaluate(args: argparse.Namespace) -> int:
    options = EvaluateOptions(
        features=tuple(args.features), n_bootstrap=args.bootstrap, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, prdc_k=args.k, copy_ratio=args.copy_ratio, top_k_pairs=args.top_k,
        tsne_perplexity=args.tsne_perplexity, tsne_learning_rate=args.tsne_learning_rate, ae_steps=args.ae_steps,
        download_weights=not args.offline, update_card=not args.no_card, seed=args.seed, overwrite=args.overwrite,
        channels=args.channels,
        device=args.device, workers=args.workers, cache_dir=args.cache_dir, use_cache=not args.no_cache,
    )
    doc = evaluate_synthetic_set(args.real, args.synthetic, args.out, options)
    print(format_table(doc))
    print(f"wrote {args.out}/metrics.json")
    return 0
