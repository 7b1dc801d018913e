"""Diffusion and rectified-flow models for image/mask pairs on MONAI's generative components.

Importing the package registers the ``diffusion`` model.
"""

from synthmed.models.diffusion.model import Diffusion, DiffusionParams  # noqa: F401
