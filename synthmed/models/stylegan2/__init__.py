"""StyleGAN2-ADA in plain PyTorch with the mask variants B-SG, M-SG and C-SG of Vu et al.

Importing the package registers the ``stylegan2`` model.
"""

from synthmed.models.stylegan2.model import StyleGAN2, StyleGAN2Params  # noqa: F401
