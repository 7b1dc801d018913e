"""The Python API: one function per stage, as ``synthmed.<name>`` (see `synthmed.__init__`).

Each function does what its command-line verb does, with the same checks and the same files written;
errors are `synthmed.errors.UserError` with the message the CLI prints. Paths may be str or Path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthmed.errors import UserError

PathLike = str | os.PathLike


def prepare(inputs: PathLike | Sequence[PathLike], out: PathLike, overwrite: bool = False, progress: bool = False,
            **options: Any) -> Path:
    """Read, check and preprocess datasets into a prepared folder (``synthmed prepare``).

    Args:
        inputs: dataset folder(s) (MSD / nnU-Net, images/ + labels/) or datalist JSON file(s).
        out: the prepared folder to write (manifest.json + cases/).
        options: `synthmed.data.prepare_options.PrepareOptions` fields, e.g. ``shape=(32, 32, 32)``,
            ``spacing=None``, ``val_fraction=0.2``, ``folds=0``.

    Returns:
        The path of the written ``manifest.json``.
    """
    from pydantic import ValidationError

    from synthmed.data.prepare import PrepareOptions, prepare_dataset
    from synthmed.errors import validation_problems

    try:
        prepare_options = PrepareOptions(**options)
    except ValidationError as err:
        raise UserError("prepare options:\n  " + "\n  ".join(validation_problems(err, "prepare"))) from None
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    return prepare_dataset(paths, out, prepare_options, overwrite=overwrite, progress=progress)


def train(config: PathLike | dict, overrides: Sequence[str] = (), resume: bool = False) -> Path:
    """Train a generator on a manifest's train split (``synthmed train``); returns the run folder.

    Args:
        config: a YAML preset (e.g. ``configs/dcgan3d_32.yaml``) or the same as a dict.
        overrides: ``"a.b=c"`` strings, as ``--set``, e.g. ``["data.manifest=prep", "out=runs/r1"]``.
        resume: continue the run exactly from its newest checkpoint.

    ``train.fidelity_every`` is served by the metrics stage's fidelity monitor, as on the command line.
    """
    from synthmed.config import read_yaml
    from synthmed.metrics.monitor import fidelity_monitor
    from synthmed.train.config import resolve_config
    from synthmed.train.loop import train as run_training

    raw, source = (config, "config") if isinstance(config, dict) else (read_yaml(config), str(config))
    resolved = resolve_config(raw, list(overrides), source=source)
    return run_training(resolved, resume=resume, monitor_factory=fidelity_monitor)


def sample(checkpoint: PathLike, out: PathLike, n: int | None = None, seeds: Sequence[int] | str | None = None,
           best: bool = False, **options: Any) -> Path:
    """Draw synthetic pairs and write them with their dataset card (``synthmed sample``); returns ``out``.

    Args:
        checkpoint: a run folder (its newest checkpoint; with ``best``, its ``checkpoints/best.pt``) or a
            checkpoint file.
        n: pairs drawn from one random stream seeded by ``seed`` (an option, default 0).
        seeds: instead of ``n``, one pair per seed (a list, or a string like ``"0-99,200"``); pair k is a
            function of its seed alone.
        options: `synthmed.sample.sampler.sample_to_folder` keywords, e.g. ``seed``, ``batch_size``,
            ``device``, ``masks_dir``, ``overwrite``.
    """
    from synthmed.sample.sampler import parse_seeds, sample_to_folder
    from synthmed.train.checkpoint import resolve_best_checkpoint

    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    source = resolve_best_checkpoint(checkpoint) if best else checkpoint
    return sample_to_folder(source, n, out, seeds=None if seeds is None else [int(s) for s in seeds], **options)


def evaluate(real: PathLike, synthetic: PathLike, out: PathLike, **options: Any) -> dict[str, Any]:
    """Fidelity, diversity and memorisation of a synthetic set (``synthmed evaluate``); returns ``metrics.json``.

    Args:
        real: a prepared folder or manifest, optionally ``:split`` (e.g. ``"prep:test"``).
        synthetic: the synthetic set folder.
        options: `synthmed.metrics.evaluate.EvaluateOptions` fields, e.g. ``features=("autoencoder",)``.
    """
    from synthmed.metrics.evaluate import EvaluateOptions, evaluate_synthetic_set

    return evaluate_synthetic_set(str(real), synthetic, out, EvaluateOptions(**options))


def downstream(config: PathLike, overrides: Sequence[str] = (), allow_leakage: bool = False,
               overwrite: bool = False) -> Path:
    """Does synthetic data improve segmentation of real test cases? (``synthmed downstream``); returns its folder.

    Args:
        config: a downstream YAML (e.g. ``configs/downstream_demo.yaml``).
        overrides: ``"a.b=c"`` strings, as ``--set``.
    """
    from synthmed.downstream.benchmark import run_downstream
    from synthmed.downstream.config import load_downstream_config

    return run_downstream(load_downstream_config(config, list(overrides)), allow_leakage=allow_leakage,
                          overwrite=overwrite)


def export(manifest: PathLike, synthetic: PathLike | Sequence[PathLike], out: PathLike, **options: Any) -> Path:
    """An nnU-Net v2 raw dataset of the real cases plus synthetic sets (``synthmed export nnunet``).

    Args:
        manifest: the prepared folder or its manifest.json.
        synthetic: one synthetic set folder or several.
        out: the folder holding nnU-Net datasets; the ``DatasetXXX_Name`` folder is written inside.
        options: ``n``, ``dataset_id``, ``name``, ``folds``, ``overwrite`` (see ``synthmed export nnunet -h``).
    """
    from synthmed.export.nnunet import export_nnunet

    sets = [synthetic] if isinstance(synthetic, (str, os.PathLike)) else list(synthetic)
    return export_nnunet(manifest, sets, out, **options)


def load_generator(path: PathLike, device: str = "cpu"):
    """The generator of a ``generator.safetensors`` (written at the end of every run), ready to sample.

    Returns:
        The model (`synthmed.models.base.GenerativeModel`, in eval mode): ``model.sample(n, seed)`` and
        ``model.sample_seeds([0, 5])`` give images float32 [N, C, *S] in [-1, 1] and masks int64 [N, *S].
        ``model.provenance`` holds the file's metadata: the model and run configuration, ``step``,
        ``synthmed_version``, ``manifest_sha256``, ``trained_on_case_ids`` and ``trained_on_count``,
        ``labels``, ``preprocessing`` (the intensity mapping back to physical units).
    """
    from synthmed.train.checkpoint import load_exported_generator

    model, provenance = load_exported_generator(path, device)
    model.provenance = provenance
    return model
