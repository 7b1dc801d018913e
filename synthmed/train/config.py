"""Training configuration: YAML presets validated by pydantic, with ``--set a.b=c`` overrides.

Unknown keys and bad values are errors that name the key. The resolved configuration is written to
the run folder as ``config.yaml`` and stored in every checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synthmed.errors import UserError, validation_problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    name: str  # a registered model, e.g. dcgan3d, wgan3d
    params: dict[str, Any] = {}  # validated by the model's own parameter class


class DataSection(_Strict):
    manifest: str  # prepared folder or its manifest.json
    split: Literal["train", "trainval"] = "train"  # generators never see val/test unless asked ("trainval")
    fold: int | None = None  # train on this fold's training part only (its validation part is held out)
    class_key: str | None = None  # manifest case field (e.g. "source") giving the class of conditional models
    classes: list[str] | None = None  # class values in index order; None: sorted values found in the manifest


class OptimizerSection(_Strict):
    type: Literal["adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class TrainSection(_Strict):
    steps: int = Field(1000, ge=1)  # optimisation steps (one step = one discriminator update)
    batch_size: int = Field(8, ge=1)  # global batch, split across processes
    seed: int = 0
    ema_kimg: float = Field(0.5, ge=0)  # generator EMA half-life in thousands of images; 0 = no averaging
    log_every: int = Field(10, ge=1)  # steps between metrics.jsonl lines
    checkpoint_every: int = Field(500, ge=1)  # steps between checkpoints (and the last step)
    keep_checkpoints: int = Field(2, ge=1)  # newest checkpoints kept on disk
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    compile: bool = False  # torch.compile the networks
    progress: bool = True  # progress bar with ETA


class RunConfig(_Strict):
    model: ModelSection
    data: DataSection
    optim: dict[str, OptimizerSection]  # one optimiser per network, keyed like the model's networks
    train: TrainSection = TrainSection()
    out: str = "runs/run"  # run folder

    @model_validator(mode="after")
    def _optimizers_named(self) -> "RunConfig":
        if not self.optim:
            raise ValueError("optim: needs one optimiser per network (e.g. optim.G and optim.D)")
        return self


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=c`` strings; values are parsed as YAML (numbers, lists, booleans)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=200")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def format_validation_error(source: str, err: ValidationError, prefix: str = "") -> str:
    return f"{source}: invalid configuration:\n  " + "\n  ".join(validation_problems(err, prefix))


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    return raw


def resolve_config(raw: dict, overrides: list[str] = (), source: str = "config") -> RunConfig:
    """Validate a raw dict (plus overrides) into a RunConfig, including the model's own parameters."""
    from synthmed.models.registry import validate_params

    raw = apply_overrides(dict(raw), list(overrides))
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(source, err)) from None
    params = validate_params(config.model.name, config.model.params)
    # Store the model parameters with their defaults filled in, so the saved config is complete.
    config.model.params = params.model_dump(mode="json")
    return config


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
