"""Downstream benchmark configuration: the sections of its YAML preset (`DownstreamConfig`).

Reading YAML, ``--set a.b=c`` overrides and validation errors are `synthmed.config`'s. The resolved
configuration is written to the output folder as ``config.yaml``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from synthmed.config import StrictModel, read_yaml, validate_config


class ArmKind(StrEnum):
    """What a segmentation model is trained on (see `synthmed.downstream.arms`)."""

    REAL = "real"  # real cases only: the baseline
    SYNTHETIC = "synthetic"  # n synthetic cases only
    REAL_SYNTHETIC = "real+synthetic"  # real cases plus n synthetic cases, shuffled together
    PRETRAIN_FINETUNE = "pretrain_finetune"  # n synthetic cases first, then the real cases


class AugmentationSection(StrictModel):
    """Classical augmentation (MONAI RandAffine + Rand3DElastic). Defaults: the thesis's Tables 3.7/3.8.

    Rotations are in degrees about array axes 0, 1, 2 (x, y, z of a RAS-oriented manifest). The
    thesis gives translations in voxels of 128-512 voxel volumes; here they are a fraction of the
    volume size, so that one preset fits every shape.
    """

    affine_prob: float = Field(0.5, ge=0, le=1)  # chance of RandAffine per training case
    elastic_prob: float = Field(0.3, ge=0, le=1)  # chance of Rand3DElastic per training case
    rotate_deg: tuple[float, float, float] = (5.0, 5.0, 45.0)  # +- range per axis (Table 3.7)
    elastic_rotate_deg: tuple[float, float, float] = (5.0, 5.0, 180.0)  # +- range per axis (Table 3.8)
    scale: tuple[float, float, float] = (0.15, 0.15, 0.15)  # zoom factor 1 +- this (0.85..1.15)
    translate_fraction: tuple[float, float, float] = (0.1, 0.1, 0.02)  # +- shift, fraction of the size
    elastic_sigma: tuple[float, float] = (5.0, 8.0)  # smoothness of the deformation field (voxels)
    elastic_magnitude: tuple[float, float] = (100.0, 200.0)  # magnitude of the deformation field


class ModelSize(StrEnum):
    TINY = "tiny"
    SMALL = "small"
    BASE = "base"
    LARGE = "large"


class TrainSection(StrictModel):
    """Segmentation training of every unit. Budgets are optimiser steps, equal across arms by default."""

    steps: int | None = Field(None, ge=1)  # optimiser steps per unit (None: from epochs)
    epochs: int | None = Field(None, ge=1)  # convenience: steps = epochs x ceil(real-only arm's cases / batch_size)
    budget: Literal["equal_steps", "per_arm_epochs"] = "equal_steps"  # per_arm_epochs: epochs over each arm's own cases (unequal)
    pretrain_steps: int | None = Field(None, ge=1)  # synthetic pretraining steps (None: = the unit's steps)
    pretrain_epochs: int | None = Field(None, ge=1)  # convenience, converted like epochs (pretrain set's size)
    val_every: int | None = Field(None, ge=1)  # steps between validations (None: one real-only epoch)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(2e-4, gt=0)  # AdamW learning rate (thesis), constant: the same schedule for every arm
    weight_decay: float = Field(1e-5, ge=0)  # AdamW weight decay (thesis)
    model_size: ModelSize = ModelSize.SMALL  # SegResNet (3D) / UNet (2D) width and depth preset
    select: Literal["best_val", "last"] = "best_val"  # which validation point's weights each unit keeps
    roi_size: list[int] | None = None  # sliding-window size at inference (None: the whole volume)
    sw_overlap: float = Field(0.5, ge=0, lt=1)  # sliding-window overlap
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    progress: bool = True

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "TrainSection":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give train.steps (optimiser steps) or train.epochs (converted to steps), not both")
        if self.pretrain_steps is not None and self.pretrain_epochs is not None:
            raise ValueError("give train.pretrain_steps or train.pretrain_epochs, not both")
        if self.budget == "per_arm_epochs" and self.steps is not None:
            raise ValueError("train.budget=per_arm_epochs counts epochs over each arm's cases: give train.epochs")
        return self

    @property
    def epochs_or_default(self) -> int:
        """The epochs to convert when neither steps nor epochs is given: 50."""
        return self.epochs if self.epochs is not None else 50


class StatsSection(StrictModel):
    bootstrap: int = Field(2000, ge=100)  # bootstrap resamples for confidence intervals
    confidence: float = Field(0.95, gt=0, lt=1)
    alpha: float = Field(0.05, gt=0, lt=1)  # significance level of the tests


class DownstreamConfig(StrictModel):
    manifest: str  # prepared folder or its manifest.json; the test split is the held-out set
    synthetic: dict[str, str] = {}  # name -> synthetic-set folder (imagesTr/, labelsTr/, card.json)
    arms: list[ArmKind] = [ArmKind.REAL, ArmKind.REAL_SYNTHETIC]
    n_synthetic: list[int] = [20]  # synthetic cases per arm that uses them
    real_sizes: list[int | Literal["all"]] = ["all"]  # real training cases per fold (subsampled)
    with_augmentation: list[bool] = [False]  # run each arm without (false) and/or with (true) classical augmentation
    augmentation: AugmentationSection = AugmentationSection()  # its parameters, for the arms run with it
    folds: int | None = Field(None, ge=2)  # k folds of the train split (None: all the manifest's folds)
    seeds: list[int] = [0]
    binarize: bool = False  # merge every foreground label into 1 (real and synthetic)
    allow_extra_labels: bool = False  # run arms whose generator saw real cases outside the arm's own (labelled so)
    train: TrainSection = TrainSection()
    stats: StatsSection = StatsSection()
    out: str = "runs/downstream"

    @field_validator("arms", mode="before")
    @classmethod
    def _known_arms(cls, v):
        valid = [k.value for k in ArmKind]
        for name in v if isinstance(v, list) else [v]:
            if isinstance(name, str) and name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown arm {name!r}; {hint}valid arms: {', '.join(valid)}")
        return v

    @field_validator("augmentation", mode="before")
    @classmethod
    def _parameters_not_arm_switches(cls, v):
        if isinstance(v, list):  # what the key meant before it was renamed
            raise ValueError("takes the augmentation parameters (a mapping); "
                             "list whether arms run without/with augmentation in with_augmentation")
        return v

    @field_validator("n_synthetic", "seeds", "arms", "real_sizes", "with_augmentation")
    @classmethod
    def _non_empty_unique(cls, v):
        if not v:
            raise ValueError("needs at least one value")
        if len(set(map(str, v))) != len(v):
            raise ValueError(f"values must be unique, got {list(v)}")
        return v

    @field_validator("n_synthetic", "real_sizes")
    @classmethod
    def _positive_counts(cls, v):
        bad = [x for x in v if x != "all" and x < 1]
        if bad:
            raise ValueError(f"counts must be at least 1, got {bad}")
        return v

    @model_validator(mode="after")
    def _synthetic_sets_for_synthetic_arms(self) -> "DownstreamConfig":
        uses = [a.value for a in self.arms if a != ArmKind.REAL]
        if uses and not self.synthetic:
            raise ValueError(f"arms {uses} need synthetic sets: add synthetic: {{name: path}}")
        return self


def resolve_downstream_config(raw: dict, overrides: Sequence[str] = (), source: str = "config") -> DownstreamConfig:
    """Validate a raw dict (plus ``a.b=c`` overrides) into a DownstreamConfig.

    Raises:
        UserError: naming every bad or unknown key.
    """
    return validate_config(DownstreamConfig, raw, overrides, source)


def load_downstream_config(path: str | Path, overrides: Sequence[str] = ()) -> DownstreamConfig:
    """Read and validate a YAML preset.

    Raises:
        UserError: the file is unreadable, or a key is bad or unknown.
    """
    return resolve_downstream_config(read_yaml(path), overrides, source=str(path))
