import math

import torch

from synthmed.models import losses
from synthmed.train.loop import ema_beta


def test_nonsaturating_losses_known_values():
    zero = torch.zeros(4)
    assert math.isclose(losses.d_loss_nonsaturating(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(losses.g_loss_nonsaturating(zero).item(), math.log(2), rel_tol=1e-6)


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = w . x has gradient w everywhere: the penalty is (|w| - 1)^2 exactly.
    w = torch.tensor([3.0, 4.0])
    x = torch.randn(5, 2, requires_grad=True)
    penalty = losses.gradient_penalty(x @ w, x)
    assert math.isclose(penalty.item(), (5.0 - 1.0) ** 2, rel_tol=1e-6)


def test_ema_half_life_in_images():
    beta = ema_beta(batch_size=10, ema_kimg=0.01)  # half-life of 10 images = one step
    assert math.isclose(beta, 0.5)
    assert ema_beta(8, 0) == 0.0
