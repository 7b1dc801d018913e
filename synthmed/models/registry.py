"""Model registry: every generative family registers a builder under a name.

The trainer, the sampler and the CLI find models only through this registry, so a new family (HA-GAN,
StyleGAN2, diffusion) plugs in by registering itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from synthmed.errors import UserError, unknown_name_message, validation_problems


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about the data it generates."""

    shape: tuple[int, ...]  # spatial shape of one volume, e.g. (32, 32, 32)
    image_channels: int
    num_labels: int  # including background


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: type[BaseModel]
    builder: Callable[[BaseModel, DataInfo], Any]


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, params: type[BaseModel]) -> Callable:
    """Decorator: ``@register_model("dcgan3d", DCGANParams)`` on ``builder(params, data_info)``."""

    def decorate(builder: Callable) -> Callable:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        if not issubclass(params, BaseModel):
            raise TypeError(f"params of {name!r} must be a pydantic model")
        _MODELS[name] = ModelSpec(name, params, builder)
        return builder

    return decorate


def look_up_model(name: str) -> ModelSpec:
    _import_families()
    if name in _MODELS:
        return _MODELS[name]
    raise UserError("model.name: " + unknown_name_message("model", name, _MODELS))


def validate_params(name: str, params: dict) -> BaseModel:
    spec = look_up_model(name)
    try:
        return spec.params.model_validate(params)
    except ValidationError as err:
        raise UserError("invalid configuration:\n  " + "\n  ".join(validation_problems(err, "model.params"))) from None


def build_model(name: str, params: dict, data_info: DataInfo):
    spec = look_up_model(name)
    return spec.builder(validate_params(name, params), data_info)


def _import_families() -> None:
    # Importing a family module registers it.
    from synthmed.models import dcgan  # noqa: F401
    from synthmed.models import diffusion  # noqa: F401
    from synthmed.models import fastgan  # noqa: F401
    from synthmed.models import hagan  # noqa: F401
    from synthmed.models import stylegan2  # noqa: F401
