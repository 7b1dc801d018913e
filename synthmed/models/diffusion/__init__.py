"""Diffusion and rectified-flow models for image/mask pairs on MONAI's generative components.

Importing the package registers the ``diffusion`` model.
"""

from synthmed.models.diffusion.latent import LatentDiffusion
from synthmed.models.diffusion.model import Diffusion, DiffusionParams
from synthmed.models.registry import DataInfo, register_model

__all__ = ["Diffusion", "DiffusionParams", "LatentDiffusion"]


@register_model("diffusion", DiffusionParams)
def build_diffusion(params: DiffusionParams, data: DataInfo) -> Diffusion:
    return LatentDiffusion(params, data) if params.variant == "latent" else Diffusion(params, data)
