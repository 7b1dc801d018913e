"""`synthmed evaluate`: fidelity, diversity and memorisation of a synthetic set against real cases.

Every distance is reported with its sample counts and feature space, and next to the same figure
between two real sets (real train vs real test) computed the same way, for scale. Outputs (written
to a temporary folder, renamed when complete): ``metrics.json``, PNG plots, and headline figures in
the synthetic set's ``card.json`` (``metrics`` and ``privacy_check``, replaced atomically).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import synthmed
from synthmed.data.discover import safe_case_id
from synthmed.errors import UserError
from synthmed.fileio import atomic_directory, atomic_write_json, check_output_folder
from synthmed.metrics import plots
from synthmed.metrics.bootstrap import CI_LEVEL, SUBSAMPLE_METHOD, subsample_ci
from synthmed.metrics.distances import frechet_distance, kernel_inception_distance, mmd2_unbiased
from synthmed.metrics.diversity import ms_ssim_diversity
from synthmed.metrics.extractors.base import (
    FeatureExtractor,
    WeightsUnavailable,
    available_feature_extractors,
    build_feature_extractor,
    extract_features,
    look_up_feature_extractor,
    resolve_device,
)
from synthmed.metrics.channels import ChannelFeatures, channel_names_of, channel_spaces, check_channel_mode
from synthmed.metrics.feature_cache import FeatureCache, default_cache_dir
from synthmed.metrics.inception_score import inception_score
from synthmed.metrics.intensity import intensity_wasserstein, sample_voxels
from synthmed.metrics.json_safe import json_safe
from synthmed.metrics.keys import TORCH_FIDELITY_NAMES, Comparison, MetricKey, Modality
from synthmed.metrics.mask_stats import compare_mask_statistics
from synthmed.metrics.memorisation import memorisation_audit, pixel_features
from synthmed.metrics.prdc import PRDC_K, precision_recall_density_coverage
from synthmed.metrics.real_source import RealSource, load_real_source
from synthmed.sample.synthetic_set import load_synthetic_set
from synthmed.sample.card import load_card
from synthmed.sample.montage import save_montage
from synthmed.sample.postprocess import images_to_network_units, images_to_original_units, intensity_range

METRICS_FORMAT = "synthmed-evaluation"
DEFAULT_FEATURES = ("radiomics", "autoencoder", "medicalnet", "inception")  # 3D data; 2D twins swapped in
MIN_MEANINGFUL_SAMPLES = 10  # fewer cases per set: distances are noted as not meaningful
NO_CARD = ("no card.json: the generator's training cases are unknown, so the privacy (memorisation) audit "
           "and the leakage check are skipped and no card is updated")


@dataclass
class EvaluateOptions:
    """What `evaluate_synthetic_set` computes; the defaults are also the ``synthmed evaluate`` CLI's."""

    features: tuple[str, ...] = DEFAULT_FEATURES  # feature spaces, in order; the first available gives the headline
    n_bootstrap: int = 100  # subsamples for the Fréchet and KID confidence intervals (see bootstrap.subsample_ci)
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped at the smaller set
    prdc_k: int = PRDC_K
    copy_ratio: float = 0.5  # memorisation flag: nearest-training distance < copy_ratio x typical real NN distance
    top_k_pairs: int = 5  # closest synthetic/training pairs drawn
    tsne_perplexity: float = plots.TSNE_PERPLEXITY
    tsne_learning_rate: float = plots.TSNE_LEARNING_RATE
    ae_steps: int = 150  # autoencoder training steps
    download_weights: bool = True  # False: use only weights already in the cache
    update_card: bool = True  # append headline figures to the synthetic set's card.json
    seed: int = 0
    overwrite: bool = False
    extractor_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per feature space, e.g. {"inception": {"pretrained": False}}
    channels: str = "auto"  # multi-channel images: auto, per_channel or stacked (see `synthmed.metrics.channels`)
    device: str = "auto"  # torch feature extractors: auto (cuda when available), cpu or cuda
    workers: int | None = None  # radiomics worker processes; None: the CPU cores available
    cache_dir: str | None = None  # real-set feature cache; None: $SYNTHMED_CACHE/features or ~/.cache/synthmed/features
    use_cache: bool = True


@dataclass
class Sets:
    """The image sets compared, images in [-1, 1] ``[N, 1, *spatial]`` and masks ``[N, *spatial]``."""

    real: tuple[np.ndarray, np.ndarray]  # the --real split
    synthetic: tuple[np.ndarray, np.ndarray]
    train: tuple[np.ndarray, np.ndarray]  # the generator's training cases
    test: tuple[np.ndarray, np.ndarray]  # real held-out cases (reference figures)
    num_labels: int
    train_ids: list[str]
    has_card: bool = True  # False: the set has no card.json (training cases unknown)


def _check_options(o: EvaluateOptions) -> None:
    problems = [f"{name} must be >= {low}, got {value}" for name, value, low in
                (("n_bootstrap", o.n_bootstrap, 2), ("kid_subsets", o.kid_subsets, 1), ("kid_subset_size", o.kid_subset_size, 2),
                 ("prdc_k", o.prdc_k, 1), ("top_k_pairs", o.top_k_pairs, 0), ("ae_steps", o.ae_steps, 1)) if value < low]
    if o.copy_ratio <= 0:
        problems.append(f"copy_ratio must be > 0, got {o.copy_ratio}")
    if o.workers is not None and o.workers < 1:
        problems.append(f"workers must be >= 1, got {o.workers}")
    if problems:
        raise UserError("evaluate: " + "; ".join(problems))
    check_channel_mode(o.channels)
    for name in o.features:
        look_up_feature_extractor(name)


def _as_modality(sets_images: np.ndarray, masks: np.ndarray, modality: Modality, num_labels: int) -> np.ndarray:
    if modality == Modality.IMAGES:
        return sets_images
    return (masks[:, None].astype(np.float32) / max(num_labels - 1, 1)) * 2 - 1


NOTE_TEXT = {  # table footnotes, one per kind of note (metrics.json holds each figure's own numbers)
    "few_samples": f"fewer than {MIN_MEANINGFUL_SAMPLES} samples in a set: not meaningful",
    "rank_deficient": "no more samples than feature dimensions: the covariance is rank-deficient, so FD is "
                      "dominated by small-sample bias; compare only with the real-vs-real figure at similar n",
    "negative_kid": "negative: KID is the unbiased estimate of MMD² >= 0, which scatters around 0 when the sets "
                    "are alike; read as ~0",
    "prdc_too_few": "precision/recall need more than k samples per set (k-nearest-neighbour radii)",
}


def _sample_notes(n: int, n_features: int, k: int) -> dict[str, dict[str, str]]:
    """{figure: {note kind: why}} for sets of (at least) `n` samples with `n_features` features."""
    notes: dict[str, dict[str, str]] = {MetricKey.FRECHET.value: {}, MetricKey.KID_MEAN.value: {}, "prdc": {}}
    if n < MIN_MEANINGFUL_SAMPLES:
        for key in (MetricKey.FRECHET.value, MetricKey.KID_MEAN.value):
            notes[key]["few_samples"] = f"only {n} samples in a set (fewer than {MIN_MEANINGFUL_SAMPLES}): not meaningful"
    if n <= n_features:
        notes[MetricKey.FRECHET.value]["rank_deficient"] = (
            f"{n} samples <= {n_features} feature dimensions: the covariance is rank-deficient, so FD is dominated "
            "by small-sample bias; compare only with the real-vs-real figure at similar n")
    if n <= k:
        notes["prdc"]["prdc_too_few"] = f"needs more than k = {k} samples per set (k-nearest-neighbour radii); the smaller set has {n}"
    return notes


def _distance_figures(fake: np.ndarray, real: np.ndarray, space: str, o: EvaluateOptions, names: tuple[str, str]) -> dict:
    """Fréchet and KID with subsampling intervals, and PRDC, of `fake` against `real`.

    A figure that the sample counts make unreliable carries ``notes`` ({kind: why}); PRDC with too
    few samples is ``{"unavailable": why}``. The Fréchet interval is clipped at 0 (FD >= 0).
    """
    notes = _sample_notes(min(len(fake), len(real)), fake.shape[1], o.prdc_k)
    fd = frechet_distance(fake, real)
    kid = kernel_inception_distance(fake, real, o.kid_subsets, o.kid_subset_size, seed=o.seed)
    fd_ci = subsample_ci(frechet_distance, fake, real, fd, o.n_bootstrap, seed=o.seed)
    kid_ci = subsample_ci(mmd2_unbiased, fake, real, kid.mean, o.n_bootstrap, seed=o.seed, max_size=o.kid_subset_size)
    counts = {f"n_{names[0]}": len(fake), f"n_{names[1]}": len(real), "feature_space": space, "n_features": fake.shape[1]}
    if kid.mean < 0:
        notes[MetricKey.KID_MEAN.value]["negative_kid"] = NOTE_TEXT["negative_kid"]
    out = {
        MetricKey.FRECHET.value: {"value": fd, "ci95": None if fd_ci is None else [max(fd_ci[0], 0.0), fd_ci[1]], **counts},
        MetricKey.KID_MEAN.value: {"value": kid.mean, "std": kid.std, "ci95": None if kid_ci is None else list(kid_ci),
                                    "subset_size": kid.subset_size, "subsets": o.kid_subsets, **counts},
    }
    for key in (MetricKey.FRECHET.value, MetricKey.KID_MEAN.value):
        if notes[key]:
            out[key]["notes"] = notes[key]
    if notes["prdc"]:
        out["prdc"] = {"unavailable": notes["prdc"]["prdc_too_few"], "notes": notes["prdc"]}
    else:
        prdc = precision_recall_density_coverage(real, fake, o.prdc_k)
        out.update({k: {"value": v, "k": o.prdc_k, **counts} for k, v in prdc.items()})
    out["torch_fidelity"] = torch_fidelity_figures(out)
    return out


def torch_fidelity_figures(figures: dict) -> dict[str, float]:
    """The same figures, flat, under torch-fidelity's result keys (see `keys.TORCH_FIDELITY_NAMES`)."""
    names = TORCH_FIDELITY_NAMES
    kid = figures[MetricKey.KID_MEAN.value]
    out = {names[MetricKey.FRECHET]: figures[MetricKey.FRECHET.value]["value"],
           names[MetricKey.KID_MEAN]: kid["value"], names[MetricKey.KID_STD]: kid["std"]}
    precision = figures.get(MetricKey.PRECISION.value, {}).get("value")
    recall = figures.get(MetricKey.RECALL.value, {}).get("value")
    if precision is not None and recall is not None:
        f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out.update({names[MetricKey.PRECISION]: precision, names[MetricKey.RECALL]: recall, names[MetricKey.F_SCORE]: f_score})
    return out


def _standardised(views: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    # Radiomics features have unrelated units: z-score every set on the real training cases.
    # Features (nearly) constant on the real cases are dropped: dividing by a vanishing spread turned
    # a rounding-level difference into a Frechet distance of 1e11 (seen on mask shape features).
    out = {}
    for view, by_set in views.items():
        ref = by_set["train"]
        mean, std = ref.mean(0), ref.std(0)
        keep = std > 1e-6 * (1.0 + np.abs(mean))
        if not keep.any():
            raise UserError(f"feature space {view!r}: every feature is constant on the real training cases")
        out[view] = {k: (v[:, keep] - mean[keep]) / std[keep] for k, v in by_set.items()}
    return out


def _resolve_features(names: tuple[str, ...], data_dims: int) -> tuple[dict[str, str], dict[str, str]]:
    """({requested name: extractor to build}, {requested name: why skipped}) for data of `data_dims`.

    A 3D feature space on 2D data becomes its 2D twin (``<name>_2d``); one without a twin is skipped,
    before any work, with a one-line reason.

    Raises:
        UserError: no requested feature space applies to the data.
    """
    use, skipped = {}, {}
    for name in names:
        cls = look_up_feature_extractor(name)
        if cls.spatial_dims == 3 and data_dims == 2:
            twin = f"{name}_2d"
            if twin not in available_feature_extractors():
                skipped[name] = "3D only (no 2D twin); these images are 2D"
                continue
            name_built = twin
        else:
            name_built = name
        use[name] = name_built
    if not use:
        raise UserError(f"evaluate: none of the feature spaces {list(names)} applies to {data_dims}D images "
                        f"({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
    return use, skipped


def _build(name: str, o: EvaluateOptions, device: str, channels: list[int] | None = None) -> FeatureExtractor:
    kwargs = dict(o.extractor_kwargs.get(name, {}))
    if look_up_feature_extractor(name).uses_device:
        kwargs.setdefault("device", device)
    if name.startswith("radiomics"):
        kwargs.setdefault("workers", o.workers)
    if name.startswith("autoencoder"):
        kwargs.setdefault("steps", o.ae_steps)
    if name in ("inception", "medicalnet") and kwargs.get("pretrained", True):
        kwargs.setdefault("download", o.download_weights)
    if channels is not None:  # multi-channel images, one channel at a time (see `channels`)
        return ChannelFeatures(lambda: build_feature_extractor(name, **kwargs), channels)
    return build_feature_extractor(name, **kwargs)


def _feature_space_metrics(name: str, sets: Sets, o: EvaluateOptions, modality: Modality, run: _Run,
                           channels: list[int] | None = None) -> tuple[dict, dict]:
    """Distances for one feature space and modality: ``({view: figures}, {view: features by set})``.

    The real sets' features come from the feature cache when it holds them; the synthetic set's are
    always extracted.
    """
    extractor = _build(name, o, run.device, channels)
    by_set = {k: _as_modality(*getattr(sets, k), modality, sets.num_labels) for k in ("real", "synthetic", "train", "test")}
    if extractor.needs_fit:
        extractor.fit(by_set["train"], seed=o.seed)
    feats = {k: extract_features(extractor, v) if k == "synthetic" else
             run.cache.features(extractor, v, lambda v=v: extract_features(extractor, v))
             for k, v in by_set.items() if len(v)}
    views = {view: {k: f[view] for k, f in feats.items()} for view in feats["synthetic"]}
    if extractor.standardise:
        views = _standardised(views)
    results = {}
    for view, f in views.items():
        space = f"{extractor.name}/{view}"
        entry = {Comparison.SYNTHETIC.value: _distance_figures(f["synthetic"], f["real"], space, o, ("synthetic", "real"))}
        if len(f.get("test", [])) >= 2 and len(f["train"]) >= 2:
            entry[Comparison.REFERENCE.value] = _distance_figures(f["test"], f["train"], space, o, ("real_test", "real_train"))
        else:
            entry[Comparison.REFERENCE.value] = {"unavailable": "needs at least 2 real train and 2 real test cases"}
        results[space] = entry
    if modality == Modality.IMAGES and hasattr(extractor, "extract_logits"):
        results["inception_score"] = _inception_scores(extractor, by_set, o)
    return results, {"describe": extractor.describe(), "views": views}


def _inception_scores(extractor, by_set: dict[str, np.ndarray], o: EvaluateOptions) -> dict:
    from synthmed.metrics.extractors.base import PLANES, volume_slices

    out = {}
    for key in ("synthetic", "real"):
        images = by_set[key]
        if images.ndim == 5:  # 2.5D: every slice of every plane is one image for the classifier
            images = np.concatenate([volume_slices(images, a).reshape(-1, *volume_slices(images, a).shape[2:]) for a in range(len(PLANES))])
        mean, std = inception_score(np.concatenate([extractor.extract_logits(images[i:i + 16]) for i in range(0, len(images), 16)]), seed=o.seed)
        out[key] = {MetricKey.IS_MEAN.value: mean, MetricKey.IS_STD.value: std, "n_images": len(images)}
    return out


@dataclass
class _Run:
    """What one evaluation works with besides the image sets."""

    source: RealSource
    synthetic: Path
    names: list[str]  # synthetic case names
    syn_original: np.ndarray  # synthetic images in original units
    options: EvaluateOptions
    device: str  # resolved: "cpu" or "cuda"
    cache: FeatureCache


def _load_sets(source: RealSource, synthetic_dir: Path) -> tuple[Sets, dict, list[str], np.ndarray]:
    intensity = source.preprocessing["intensity"]
    syn_images, syn_masks, names = load_synthetic_set(synthetic_dir, tuple(source.preprocessing["shape"]),
                                                      png_range=intensity_range(intensity))
    has_card = (synthetic_dir / "card.json").exists()
    card = load_card(synthetic_dir) if has_card else {}
    real, train, test, train_ids = source.load(card.get("trained_on_case_ids", []))
    sets = Sets(real=real, train=train, test=test, synthetic=(images_to_network_units(syn_images, intensity), syn_masks),
                num_labels=max(max(source.labels) + 1, int(syn_masks.max(initial=0)) + 1, 2), train_ids=train_ids,
                has_card=has_card)
    return sets, card, names, syn_images


def evaluate_synthetic_set(real: str, synthetic: str | os.PathLike, out: str | os.PathLike,
                           options: EvaluateOptions | None = None) -> dict[str, Any]:
    """Evaluate the synthetic set folder `synthetic` against `real`; write `out`.

    Args:
        real: ``MANIFEST[:split]`` (a prepared manifest or folder, split default train) or a folder of
            image/mask pairs (see `synthmed.metrics.real_source`).
        synthetic: a set written by ``synthmed sample`` or a folder of pairs from another tool, with or
            without ``card.json`` (without: no memorisation audit, no card update; the output says so).

    Returns:
        The ``metrics.json`` document.

    Raises:
        UserError: bad options, unreadable inputs, mismatched shapes, too few cases, an unusable
            --device or --cache-dir, or an `out` that overlaps an input or may not be replaced (see
            `synthmed.fileio.check_output_folder`). Nothing is written then.
    """
    o = options or EvaluateOptions()
    _check_options(o)
    device = resolve_device(o.device)
    source = load_real_source(real)
    features, skipped = _resolve_features(o.features, source.dims)
    synthetic = Path(synthetic)
    inputs = [source.root, synthetic]
    check_output_folder(out, kind="evaluate", inputs=inputs, overwrite=o.overwrite)  # before loading the sets
    sets, card, names, syn_original = _load_sets(source, synthetic)
    cache = FeatureCache((o.cache_dir or default_cache_dir()) if o.use_cache else None)
    run = _Run(source, synthetic, names, syn_original, o, device, cache)
    with atomic_directory(out, kind="evaluate", inputs=inputs, overwrite=o.overwrite) as tmp:
        doc = _compute(run, sets, tmp, features, skipped)
        atomic_write_json(tmp / "metrics.json", doc)
    if o.update_card and sets.has_card:
        _update_card(synthetic, card, doc, Path(out))
    return doc


def _compute(run: _Run, sets: Sets, folder: Path, features: dict[str, str], skipped: dict[str, str]) -> dict[str, Any]:
    source, o, names, syn_original = run.source, run.options, run.names, run.syn_original
    labels = sorted(source.labels)
    doc: dict[str, Any] = {
        "format": METRICS_FORMAT, "synthmed_version": synthmed.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "real": {**source.description, "n": len(sets.real[0])},
        "synthetic": {"folder": str(run.synthetic.resolve()), "n": len(names)},
        "labels": {str(k): {"name": source.labels[k], "source_value": source.label_values[k]} for k in labels},
        "reference": {"n_real_train": len(sets.train[0]), "n_real_test": len(sets.test[0])},
        "options": {k: v for k, v in asdict(o).items() if k != "extractor_kwargs"},
        "device": run.device,
        "intervals": {"method": SUBSAMPLE_METHOD, "replicates": o.n_bootstrap, "confidence": CI_LEVEL},
        "card": None if sets.has_card else {"status": "missing", "note": NO_CARD},
        "feature_spaces": {name: {"status": "skipped", "reason": why} for name, why in skipped.items()},
        "key_names": {"torch_fidelity": {str(k): v for k, v in TORCH_FIDELITY_NAMES.items()}},
        Modality.IMAGES.value: {}, Modality.MASKS.value: {},
    }
    tsne_inputs = {}
    channel_names, unavailable = _channel_names(source, sets), {}
    for modality in Modality:
        names_here = channel_names if modality == Modality.IMAGES else channel_names[:1]
        for name, (built, channels, how) in channel_spaces(features, names_here, o.channels).items():
            try:
                if built in unavailable:  # tried once (weights missing): not again per channel or for masks
                    raise unavailable[built]
                results, info = _feature_space_metrics(built, sets, o, modality, run, channels)
            except WeightsUnavailable as e:  # reported once, by the table and metrics.json
                unavailable[built] = e
                doc["feature_spaces"][name] = {"status": "unavailable", "reason": str(e)}
                continue
            suffix = name[name.index("["):] if "[" in name else ""  # "[FLAIR]": one channel of several
            results = {(k.replace(built, built + suffix, 1) if k.startswith(built + "/") else k + suffix): v
                       for k, v in results.items()}
            described = doc["feature_spaces"].setdefault(name, {"status": "ok", **info["describe"]})
            described.setdefault("channels", {})[modality.value] = how
            doc[modality.value].update(results)
            tsne_inputs.setdefault(modality, []).append((name, info["views"]))
    doc["diversity"] = _diversity(sets, o)
    doc["intensity"] = _intensity(source, sets, syn_original, labels, o, folder)
    spacing = source.preprocessing.get("spacing")
    voxel_volume = float(np.prod(spacing)) if spacing else 1.0
    doc["mask_statistics"] = {"volume_unit": "mm3" if spacing else "voxels", "n_real": len(sets.real[1]), "n_synthetic": len(sets.synthetic[1]),
                              "statistics": compare_mask_statistics(sets.real[1], sets.synthetic[1], labels, voxel_volume)}
    doc["memorisation"] = (_memorisation(source, sets, names, syn_original, o, folder) if sets.has_card
                           else {"skipped": NO_CARD})
    doc["plots"] = _plots(source, sets, syn_original, tsne_inputs, o, folder)
    doc["feature_cache"] = {"folder": None if run.cache.folder is None else str(run.cache.folder),
                            "hits": run.cache.hits, "misses": run.cache.misses}
    return json_safe(doc)


def _channel_names(source: RealSource, sets: Sets) -> list[str]:
    """The image channels evaluated one by one (multi-channel 3D); one entry for grey or RGB images."""
    if source.preprocessing["intensity"].get("mode") != "per_channel":
        return ["image"]
    return channel_names_of(source.preprocessing, sets.real[0].shape[1])


def _diversity(sets: Sets, o: EvaluateOptions) -> dict:
    out = {}
    for modality in Modality:
        row = {}
        for key in ("synthetic", "real"):
            images = _as_modality(*getattr(sets, key), modality, sets.num_labels)
            row[key] = {**ms_ssim_diversity(images, seed=o.seed), "n": len(images)} if len(images) >= 2 else None
        out[modality.value] = {MetricKey.MS_SSIM.value: row, "note": "mean MS-SSIM of random pairs; lower is more diverse"}
    return out


def _intensity(source: RealSource, sets: Sets, syn_original: np.ndarray, labels: list[int], o: EvaluateOptions, folder: Path) -> dict:
    real_original = images_to_original_units(sets.real[0], source.preprocessing["intensity"])
    names = _channel_names(source, sets)
    if len(names) == 1:
        unit = "HU" if str(source.preprocessing.get("modality", "")).upper() == "CT" else "original units"
        return _channel_intensity(real_original, syn_original, sets, labels, unit, o, folder / "intensity_histograms.png")
    per_channel = {  # each channel in its own units
        name: _channel_intensity(real_original[:, c:c + 1], syn_original[:, c:c + 1], sets, labels,
                                 "HU" if name.upper() == "CT" else "original units", o,
                                 folder / f"intensity_histograms_{c}_{safe_case_id(name)}.png")
        for c, name in enumerate(names)}
    return {"channels": "per_channel", "per_channel": per_channel}


def _channel_intensity(real: np.ndarray, syn: np.ndarray, sets: Sets, labels: list[int], unit: str, o: EvaluateOptions,
                       figure: Path) -> dict:
    """Wasserstein distances of channel 0 of `real` / `syn` (original units), and their histogram figure."""
    result = intensity_wasserstein(real, syn, sets.real[1], sets.synthetic[1], labels, seed=o.seed)
    plots.save_histograms(figure, {"real": sample_voxels(real, seed=o.seed), "synthetic": sample_voxels(syn, seed=o.seed)}, unit)
    return {"unit": unit, MetricKey.WASSERSTEIN.value: result}


def _memorisation(source: RealSource, sets: Sets, names: list[str], syn_original: np.ndarray, o: EvaluateOptions, folder: Path) -> dict:
    train_f = pixel_features(*sets.train, sets.num_labels)
    syn_f = pixel_features(*sets.synthetic, sets.num_labels)
    audit = memorisation_audit(train_f, syn_f, o.copy_ratio)
    closest = audit.closest(min(o.top_k_pairs, len(names)))
    pairs = []
    train_original = images_to_original_units(sets.train[0], source.preprocessing["intensity"])
    for i in closest:
        j = int(audit.nearest_index[i])
        t_name = sets.train_ids[j]
        pairs.append((f"{names[i]} (ratio {audit.ratio[i]:.2f})", syn_original[i], sets.synthetic[1][i], t_name, train_original[j], sets.train[1][j]))
    if pairs:
        plots.save_closest_pairs(folder / "memorisation_closest_pairs.png", pairs, sets.num_labels)
    return {
        "feature_space": "pixels (image + scaled mask, average-pooled)", "threshold_ratio": audit.threshold,
        "typical_real_nn_distance": audit.typical_real_distance, "n_synthetic": len(names), "n_train": len(train_f),
        MetricKey.FRACTION_FLAGGED.value: audit.fraction_flagged, "flagged": [names[i] for i in np.flatnonzero(audit.flagged)],
        "closest": [{"synthetic": names[i], "train_case": sets.train_ids[int(audit.nearest_index[i])], "ratio": float(audit.ratio[i])}
                    for i in closest],
    }


def _plots(source: RealSource, sets: Sets, syn_original: np.ndarray, tsne_inputs: dict, o: EvaluateOptions, folder: Path) -> list[str]:
    real_original = images_to_original_units(sets.real[0], source.preprocessing["intensity"])
    save_montage(folder / "montage.png", [("real", real_original, sets.real[1]), ("synthetic", syn_original, sets.synthetic[1])],
                 labels={str(k): v for k, v in source.labels.items()})
    for modality, spaces in tsne_inputs.items():
        for name, views in spaces:
            view = next(iter(views))
            f = views[view]
            plots.save_tsne(folder / f"tsne_{modality.value}_{name}.png", {"real": f["real"], "synthetic": f["synthetic"]},
                            f"{modality.value}, {name}/{view}", o.tsne_perplexity, o.tsne_learning_rate, o.seed)
    return sorted(p.name for p in folder.glob("*.png"))


def headline_figures(doc: dict[str, Any]) -> dict[str, Any]:
    """The figures worth a line in the card: Fréchet and KID of the first feature space per modality."""
    out, seen = {}, set()
    for modality, space, syn, ref in _compared_spaces(doc):
        if modality in seen:
            continue
        seen.add(modality)
        for key in (MetricKey.FRECHET.value, MetricKey.KID_MEAN.value):
            out[f"{modality.value}/{space}/{key}"] = {**syn[key], "reference": ref.get(key, {}).get("value")}
    return out


def _compared_spaces(doc: dict[str, Any]):
    """(modality, feature space, synthetic figures, reference figures) for every space that was compared."""
    for modality in Modality:
        for space, entry in doc[modality.value].items():
            syn = entry.get(Comparison.SYNTHETIC.value) if isinstance(entry, dict) else None
            if syn:
                yield modality, space, syn, entry.get(Comparison.REFERENCE.value, {})


def _update_card(synthetic: Path, card: dict, doc: dict, out: Path) -> None:
    memo = doc["memorisation"]
    card = dict(card)
    card["metrics"] = {**card.get("metrics", {}), "evaluation": {"metrics_json": str((out / "metrics.json").resolve()),
                       "created": doc["created"], "real": doc["real"], **headline_figures(doc)}}
    card["privacy_check"] = {"method": "nearest training case distance / median real nearest-neighbour distance",
                             "feature_space": memo["feature_space"], "threshold_ratio": memo["threshold_ratio"],
                             MetricKey.FRACTION_FLAGGED.value: memo[MetricKey.FRACTION_FLAGGED.value],
                             "n_synthetic": memo["n_synthetic"], "n_train": memo["n_train"], "flagged": memo["flagged"]}
    atomic_write_json(synthetic / "card.json", card)


def format_table(doc: dict[str, Any]) -> str:
    """A short terminal summary: one line per modality and feature space, footnotes, diversity and memorisation."""
    lines = [f"{'modality':8} {'feature space':22} {'FD [95% CI]':>30} {'KID':>12} {'prec':>5} {'rec':>5}"
             f" | {'real train vs real test:':>24} {'FD':>8} {'KID':>10}"]
    notes: list[str] = []
    for modality, space, syn, ref in _compared_spaces(doc):
        fd, kid = syn[MetricKey.FRECHET.value], syn[MetricKey.KID_MEAN.value]
        ci = "" if fd["ci95"] is None else f" [{fd['ci95'][0]:.3g}, {fd['ci95'][1]:.3g}]"
        p, r = syn.get(MetricKey.PRECISION.value, {}).get("value"), syn.get(MetricKey.RECALL.value, {}).get("value")
        prdc_mark = _marks(notes, syn.get("prdc", {}))
        r_fd, r_kid = ref.get(MetricKey.FRECHET.value, {}), ref.get(MetricKey.KID_MEAN.value, {})
        ref_fd = _fmt(r_fd.get("value")) + _marks(notes, r_fd) + (_marks(notes, {"notes": {"unavailable": ref["unavailable"]}})
                                                                  if "unavailable" in ref else "")
        lines.append(f"{modality.value:8} {space:22} {_fmt(fd['value']) + ci + _marks(notes, fd):>30} "
                     f"{_fmt(kid['value']) + _marks(notes, kid):>12} {_fmt(p, 2) + prdc_mark:>5} "
                     f"{_fmt(r, 2) + prdc_mark:>5} | {'':24} {ref_fd:>8} {_fmt(r_kid.get('value')) + _marks(notes, r_kid):>10}")
    lines += [f"  [{i}] {note}" for i, note in enumerate(notes, 1)]
    n = doc["synthetic"]["n"]
    real = doc["real"]
    where = real["split"] if real.get("split") else f"folder {real.get('folder')}"
    lines.append(f"(n synthetic = {n}, n real = {real['n']} [{where}]; real train vs real test: "
                 f"the same figure between {doc['reference']['n_real_train']} real train and "
                 f"{doc['reference']['n_real_test']} real test cases, for scale; CI: {doc['intervals']['method']})")
    div = doc["diversity"][Modality.IMAGES.value][MetricKey.MS_SSIM.value]
    lines.append(f"MS-SSIM (images, lower = more diverse): synthetic {_fmt((div['synthetic'] or {}).get('mean'))}, real {_fmt((div['real'] or {}).get('mean'))}")
    memo = doc["memorisation"]
    if "skipped" in memo:
        lines.append(f"memorisation: skipped ({memo['skipped']})")
    else:
        lines.append(f"memorisation: {memo[MetricKey.FRACTION_FLAGGED.value]:.1%} of {memo['n_synthetic']} synthetic samples flagged "
                     f"(ratio < {memo['threshold_ratio']:g})")
    for name, info in doc["feature_spaces"].items():
        if info["status"] != "ok":
            lines.append(f"{name}: {info['status']} ({info['reason']})")
    cache = doc.get("feature_cache", {})
    if cache.get("folder"):
        lines.append(f"device {doc.get('device')}; real-set feature cache {cache['folder']}: {cache['hits']} hit(s), {cache['misses']} miss(es)")
    channels = {name: info["channels"]["images"] for name, info in doc["feature_spaces"].items()
                if info.get("channels", {}).get("images", "single channel") != "single channel"}
    if channels:  # multi-channel images: how each image feature space saw the channels
        lines.append("image channels: " + "; ".join(f"{name} {how}" for name, how in channels.items()))
    return "\n".join(lines)


def _marks(notes: list[str], figure: dict) -> str:
    """Footnote marks ``[i]`` for a figure's notes; each kind of note is numbered once in `notes`."""
    marks = ""
    for kind, text in figure.get("notes", {}).items():
        text = NOTE_TEXT.get(kind, text)
        if text not in notes:
            notes.append(text)
        marks += f"[{notes.index(text) + 1}]"
    return marks


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"
