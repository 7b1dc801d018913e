"""What each kind of work unit does: each calls the stage's own API and writes only its own output.

Every stage writes atomically or resumes (prepare, sample and evaluate through a ``.partial``
folder, train from its last checkpoint, downstream from its finished folds), so a unit that a killed
worker left half done is simply run again by the next worker.
"""

from __future__ import annotations

from pathlib import Path

from synthmed.config import read_yaml
from synthmed.data.bundled import sample_dataset_path
from synthmed.data.manifest import Manifest, load_manifest
from synthmed.data.prepare import prepare_dataset
from synthmed.downstream.benchmark import Benchmark
from synthmed.downstream.config import resolve_downstream_config
from synthmed.metrics.evaluate import EvaluateOptions, evaluate_synthetic_set
from synthmed.sample.sampler import sample_to_folder
from synthmed.study.config import BUNDLED, StudyConfig
from synthmed.study.plan import Slice, Unit, parse_slice, slice_cases, write_sub_manifest
from synthmed.train.config import RunConfig, resolve_config
from synthmed.train.loop import train


class SliceBenchmark(Benchmark):
    """The downstream benchmark of one slice: its sub-manifest has one fold (train = the slice's real
    cases, held-out part = the real validation cases), so every arm trains on exactly those cases."""

    def resolve_folds(self) -> list[int]:
        return [0]


def raw_inputs(config: StudyConfig) -> list[str]:
    return [str(sample_dataset_path()) if r == BUNDLED else r for r in config.data.raw or []]


def sub_manifest(study: Path, slice_name: str) -> Path:
    return study / "slices" / slice_name / "manifest.json"


def generator_config(config: StudyConfig, name: str, manifest: Path | str, run_dir: Path, seed: int) -> RunConfig:
    """The generator's preset with its overrides, trained on the slice's train split for its step budget.

    Raises:
        UserError: the preset or an override is invalid (naming the generator).
    """
    spec = config.generators[name]
    raw = read_yaml(spec.preset)
    forced = [f"data.manifest={manifest}", "data.split=train", "data.fold=null", f"train.steps={spec.steps}",
              f"train.seed={seed}", f"train.checkpoint_every={spec.steps}", "train.progress=false", f"out={run_dir}"]
    return resolve_config(raw, [*spec.set, *forced], source=f"generators.{name} ({spec.preset})")


def run_prepare(config: StudyConfig, study: Path, unit: Unit) -> None:
    prepare_dataset(raw_inputs(config), study / unit.output, config.data.prepare, overwrite=True, progress=False)


def run_slice(config: StudyConfig, study: Path, unit: Unit, prepared: Manifest) -> None:
    sl = parse_slice(unit.slice)
    write_sub_manifest(prepared, slice_cases(prepared, config, sl), study / unit.output, sl)


def run_train(config: StudyConfig, study: Path, unit: Unit) -> None:
    sl = parse_slice(unit.slice)
    run_dir = study / unit.output
    run = generator_config(config, unit.generator, sub_manifest(study, unit.slice), run_dir, seed_of(sl))
    resume = any((run_dir / "checkpoints").glob("*.pt"))  # a killed worker's run continues where it stopped
    train(run, resume=resume)


def run_sample(config: StudyConfig, study: Path, unit: Unit) -> None:
    spec = config.generators[unit.generator]
    run_dir = study / "generators" / unit.generator / unit.slice
    sample_to_folder(run_dir, config.n_samples, study / unit.output, seed=seed_of(parse_slice(unit.slice)),
                     overwrite=True, steps=spec.sample_steps)


def run_evaluate(config: StudyConfig, study: Path, unit: Unit) -> None:
    ev = config.evaluation
    options = EvaluateOptions(features=tuple(ev.features), n_bootstrap=ev.bootstrap, ae_steps=ev.ae_steps,
                              download_weights=ev.download_weights, update_card=False, overwrite=True,
                              seed=seed_of(parse_slice(unit.slice)))
    real = f"{sub_manifest(study, unit.slice)}:{ev.real_split}"
    evaluate_synthetic_set(real, study / "synthetic" / unit.generator / unit.slice, study / unit.output, options)


def downstream_raw(config: StudyConfig, study: Path, slice_name: str) -> dict:
    """The downstream configuration of one slice: every arm on the slice's real cases and synthetic sets."""
    ds = config.downstream
    return {"manifest": str(sub_manifest(study, slice_name)),
            "synthetic": {g: str(study / "synthetic" / g / slice_name) for g in config.generators},
            "arms": [a.value for a in ds.arms], "n_synthetic": ds.n_synthetic, "real_sizes": ["all"],
            "with_augmentation": ds.with_augmentation, "augmentation": ds.augmentation.model_dump(mode="json"),
            "seeds": [seed_of(parse_slice(slice_name))], "binarize": ds.binarize,
            "train": {**ds.train.model_dump(mode="json"), "progress": False},
            "stats": ds.stats.model_dump(mode="json"), "out": str(study / "downstream" / slice_name)}


def run_downstream_slice(config: StudyConfig, study: Path, unit: Unit) -> None:
    ds_config = resolve_downstream_config(downstream_raw(config, study, unit.slice), source=f"downstream of {unit.id}")
    SliceBenchmark(ds_config).run()


def seed_of(sl: Slice) -> int:
    """One seed per slice for the generator, sampling and segmenters (folds differ by their fold)."""
    return sl.seed if sl.fold is None else sl.seed * 100 + sl.fold


def prepared_manifest(study: Path, plan: dict) -> Manifest:
    return load_manifest(plan["prepared"] if plan["prepared"] else study / "prepared")
