"""GAN losses, written on discriminator logits / critic scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the original GAN: real -> 1, fake -> 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)), the non-saturating generator loss."""
    return F.softplus(-fake_logits).mean()


def d_loss_wasserstein(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return fake_scores.mean() - real_scores.mean()


def g_loss_wasserstein(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Random points on straight lines between real and fake samples (WGAN-GP), requiring grad."""
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    return torch.lerp(fake.detach(), real.detach(), alpha).requires_grad_(True)


def gradient_penalty(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(||grad_x D(x)|| - 1)^2 at the interpolated inputs, averaged over the batch (Gulrajani et al. 2017)."""
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    norms = grad.float().flatten(1).norm(dim=1)
    return ((norms - 1.0) ** 2).mean()
