"""Training configuration: the sections of a run's YAML preset (`RunConfig`) and `resolve_config`.

Reading YAML, ``--set a.b=c`` overrides, validation errors and the YAML writer are
`synthmed.config`'s. The resolved configuration is written to the run folder as ``config.yaml`` and
stored in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from synthmed.config import StrictModel, validate_config


class ModelSection(StrictModel):
    name: str  # a registered model, e.g. dcgan3d, wgan3d
    params: dict[str, Any] = {}  # validated by the model's own parameter class


class DataSection(StrictModel):
    manifest: str  # prepared folder or its manifest.json; stored resolved (absolute), see resolve_config
    split: Literal["train", "trainval"] = "train"  # generators never see val/test unless asked ("trainval")
    fold: int | None = None  # train on this fold's training part only (its validation part is held out)
    class_key: str | None = None  # manifest case field (e.g. "source") giving the class of conditional models
    classes: list[str] | None = None  # class values in index order; None: sorted values found in the manifest


class OptimizerSection(StrictModel):
    type: Literal["adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class FidelitySection(StrictModel):
    """The periodic fidelity figure (``train.fidelity_every``): KID or FD of the EMA generator's pairs of seeds
    0..samples-1 against the real validation split, in each feature space (lower is better)."""

    metric: Literal["kid", "fd"] = "kid"
    spaces: list[Literal["autoencoder", "radiomics"]] = Field(["autoencoder"], min_length=1)  # first: picks best.pt
    samples: int = Field(32, ge=2)  # synthetic pairs per measurement (fixed seeds 0..samples-1)
    autoencoder_steps: int = Field(150, ge=1)  # fitting steps of the autoencoder space (on the train split, once)


class TrainSection(StrictModel):
    steps: int = Field(1000, ge=1)  # optimisation steps (one step = one discriminator update)
    batch_size: int = Field(8, ge=1)  # global batch, split across processes
    seed: int = 0
    ema_kimg: float = Field(0.5, ge=0)  # generator EMA half-life in thousands of images; 0 = no averaging
    # EMA ramp-up (StyleGAN2-ADA's): the half-life is at most this fraction of the images seen so far, so
    # a short run's EMA is not the random initial weights; null = the full half-life from step 0
    ema_rampup: float | None = Field(0.05, gt=0)
    log_every: int = Field(10, ge=1)  # steps between metrics.jsonl lines
    checkpoint_every: int = Field(500, ge=1)  # steps between checkpoints (and the last step)
    keep_checkpoints: int = Field(2, ge=1)  # newest checkpoints kept on disk
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    compile: bool = False  # torch.compile the networks
    progress: bool = True  # progress bar with ETA
    sample_every: int | None = Field(None, ge=1)  # steps between TensorBoard sample grids (null: none)
    sample_count: int = Field(8, ge=1, le=64)  # pairs in a grid: the EMA generator's seeds 0..sample_count-1
    # steps between fidelity figures (metrics.jsonl, TensorBoard) and best-checkpoint updates (null: none)
    fidelity_every: int | None = Field(None, ge=1)
    fidelity: FidelitySection = FidelitySection()


class RunConfig(StrictModel):
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


def resolve_config(raw: dict, overrides: Sequence[str] = (), source: str = "config") -> RunConfig:
    """Validate a raw dict (plus ``a.b=c`` overrides) into a RunConfig, including the model's own parameters.

    Raises:
        UserError: naming every bad or unknown key.
    """
    from synthmed.models.registry import validate_params

    config = validate_config(RunConfig, raw, overrides, source)
    params = validate_params(config.model.name, config.model.params)
    # Store the model parameters with their defaults filled in, so the saved config is complete.
    config.model.params = params.model_dump(mode="json")
    # A relative manifest path means relative to where the command runs; stored absolute, so that
    # `--resume` and sampling work from any folder.
    config.data.manifest = str(Path(config.data.manifest).expanduser().resolve())
    return config

