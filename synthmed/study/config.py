"""The study's YAML (`StudyConfig`): data, generators, sampling, evaluation, downstream arms, protocol.

Relative paths (data folders, generator presets) are resolved against the current folder first and
then against the study YAML's folder; the resolved configuration, with absolute paths, is written to
the study folder as ``study.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pydantic import ValidationError

from synthmed.config import StrictModel, apply_overrides, read_yaml
from synthmed.data.prepare_options import PrepareOptions
from synthmed.downstream.config import ArmKind, AugmentationSection, StatsSection, TrainSection
from synthmed.errors import UserError, validation_problems

BUNDLED = "bundled"  # data.raw entry naming the bundled hippocampus subset


class DataSpec(StrictModel):
    """A raw dataset with its prepare options, or a folder `synthmed prepare` already wrote."""

    raw: list[str] | None = None  # dataset folders (or "bundled": the bundled hippocampus subset)
    prepare: PrepareOptions = PrepareOptions()  # the options of `synthmed prepare` (with raw)
    prepared: str | None = None  # an existing prepared folder instead of raw

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if (self.raw is None) == (self.prepared is None):
            raise ValueError("give exactly one of raw (a dataset to prepare) and prepared (a prepared folder)")
        if self.raw is not None and not self.raw:
            raise ValueError("raw needs at least one dataset folder")
        return self


class GeneratorSpec(StrictModel):
    """One generator: a training preset, its overrides and a step budget."""

    preset: str  # a `synthmed train` YAML, e.g. configs/wgan3d_gp_32.yaml
    set: list[str] = []  # KEY=VALUE overrides of the preset (like --set)
    steps: int = Field(ge=1)  # training steps (the budget; replaces the preset's train.steps)
    sample_steps: int | None = Field(None, ge=1)  # diffusion models: sampling steps (None: the preset's)


class EvaluationSpec(StrictModel):
    """`synthmed evaluate` of every synthetic set against real cases of its own sub-manifest."""

    enabled: bool = True
    real_split: Literal["train", "test"] = "train"  # train: the generator's own cases (memorisation audit)
    features: list[str] = ["radiomics", "autoencoder"]
    bootstrap: int = Field(100, ge=10)
    ae_steps: int = Field(150, ge=1)
    download_weights: bool = False  # False: only weights already in the cache (feature spaces without them are skipped)


class DownstreamSpec(StrictModel):
    """The segmentation benchmark of every slice; its real training set is exactly the slice's train split."""

    arms: list[ArmKind] = [ArmKind.REAL, ArmKind.REAL_SYNTHETIC]
    n_synthetic: list[int] = [20]
    with_augmentation: list[bool] = [False, True]  # real + augmentation is a baseline whenever true is listed
    augmentation: AugmentationSection = AugmentationSection()
    binarize: bool = False
    train: TrainSection = TrainSection()
    stats: StatsSection = StatsSection()

    @field_validator("arms")
    @classmethod
    def _real_baseline(cls, v: list[ArmKind]) -> list[ArmKind]:
        if ArmKind.REAL not in v:
            raise ValueError("must include 'real' (the baseline every other arm is compared with)")
        return v


class StudyConfig(StrictModel):
    name: str = "study"
    data: DataSpec
    protocol: Literal["fixed_validation", "folds"] = "fixed_validation"
    folds: int | None = Field(None, ge=2)  # protocol folds: how many of the manifest's folds (None: all)
    real_sizes: list[int] = Field(min_length=1)  # real training cases per slice (= what the generator sees)
    seeds: list[int] = Field([0], min_length=1)  # one slice (real subset, generator, segmenters) per seed
    generators: dict[str, GeneratorSpec] = Field(min_length=1)
    n_samples: int = Field(ge=1)  # synthetic pairs sampled from each generator
    evaluation: EvaluationSpec = EvaluationSpec()
    downstream: DownstreamSpec = DownstreamSpec()
    out: str = "runs/study"

    @field_validator("real_sizes", "seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"values must be unique, got {v}")
        return v

    @field_validator("real_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if min(v) < 1:
            raise ValueError(f"real-set sizes must be at least 1, got {v}")
        return v

    @field_validator("generators")
    @classmethod
    def _safe_names(cls, v: dict) -> dict:
        bad = [n for n in v if not n.replace("_", "").replace("-", "").isalnum()]
        if bad:
            raise ValueError(f"generator names may hold letters, digits, '-' and '_' only: {bad}")
        return v

    @model_validator(mode="after")
    def _enough_samples(self) -> "StudyConfig":
        if max(self.downstream.n_synthetic) > self.n_samples:
            raise ValueError(f"downstream.n_synthetic {self.downstream.n_synthetic} asks for more than n_samples "
                             f"({self.n_samples})")
        if self.protocol == "fixed_validation" and self.folds is not None:
            raise ValueError("folds applies to protocol: folds only")
        if self.data.raw is not None and self.protocol == "fixed_validation" and self.data.prepare.val_fraction == 0:
            raise ValueError("protocol fixed_validation selects models on the val split: data.prepare.val_fraction "
                             "must be > 0")
        if self.data.raw is not None and self.protocol == "folds" and self.data.prepare.folds < 2:
            raise ValueError("protocol folds needs data.prepare.folds >= 2")
        return self


def resolve_path(value: str, base: Path) -> str:
    """An absolute path: `value` as given (from the current folder) if it exists, else from `base`."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or not (base / path).exists():
        return str(path.resolve())
    return str((base / path).resolve())


def load_study_config(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read, validate and resolve the paths of a study YAML.

    Raises:
        UserError: the file is unreadable, a key is bad or unknown, or a named file is missing.
    """
    path = Path(path)
    try:
        config = StudyConfig.model_validate(apply_overrides(read_yaml(path), overrides))
    except ValidationError as err:  # one line: every problem, each naming its key
        raise UserError(f"{path}: " + "; ".join(validation_problems(err))) from None
    base = path.resolve().parent
    data = config.data
    if data.raw is not None:
        data.raw = [r if r == BUNDLED else resolve_path(r, base) for r in data.raw]
        missing = [r for r in data.raw if r != BUNDLED and not Path(r).exists()]
        if missing:
            raise UserError(f"{path}: data.raw: {missing[0]} not found")
    else:
        data.prepared = resolve_path(data.prepared, base)
    for name, gen in config.generators.items():
        gen.preset = resolve_path(gen.preset, base)
        if not Path(gen.preset).is_file():
            raise UserError(f"{path}: generators.{name}.preset: {gen.preset} not found")
    return config
