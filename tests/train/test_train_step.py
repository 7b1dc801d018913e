"""The trainer's step runs on batches a caller gives, without a manifest or a run folder (as the benchmarks use it)."""

import torch

from synthmed.models.registry import DataInfo, build_model
from synthmed.train.config import OptimizerSection, TrainSection
from synthmed.train.loop import TrainStep, make_optimizer


def optimizers_for(model) -> dict[str, torch.optim.Optimizer]:
    return {name: make_optimizer(OptimizerSection(), net.parameters()) for name, net in model.nets.items()}


def test_phases_follow_their_intervals_and_the_ema_advances_only_with_its_network():
    torch.manual_seed(0)
    model = build_model("wgan3d", {"latent_dim": 8, "base_channels": 4, "n_critic": 2}, DataInfo((16, 16, 16), 1, 2))
    step = TrainStep(model, optimizers_for(model), TrainSection(batch_size=2))
    ema_updates = []
    original = model.update_ema
    model.update_ema = lambda beta: (ema_updates.append(beta), original(beta))
    real = model.codec.encode(torch.rand(2, 1, 16, 16, 16) * 2 - 1, torch.randint(0, 2, (2, 16, 16, 16)))
    phases_run = [[set(losses) & {"loss/D", "loss/G"} for losses in step(i, real)] for i in range(4)]
    assert phases_run == [[{"loss/D"}, {"loss/G"}], [{"loss/D"}], [{"loss/D"}, {"loss/G"}], [{"loss/D"}]]
    assert ema_updates == [step.ema_beta(0), step.ema_beta(2)]  # steps 0 and 2, where G was updated


def test_class_conditional_models_get_the_batch_classes():
    torch.manual_seed(0)
    params = {"latent_dim": 8, "feature_channels": 8, "g_max_channels": 8, "d_channels": 4, "d_max_channels": 8,
              "num_classes": 2}
    model = build_model("hagan", params, DataInfo((16, 16, 16), 1, 2))
    step = TrainStep(model, optimizers_for(model), TrainSection(batch_size=2))
    real = model.codec.encode(torch.rand(2, 1, 16, 16, 16) * 2 - 1, torch.randint(0, 2, (2, 16, 16, 16)))
    d_losses, g_losses, e_losses = step(0, real, classes=torch.tensor([0, -1]))
    assert torch.isfinite(d_losses["loss/D_class"]) and torch.isfinite(g_losses["loss/G_class"])
    assert set(e_losses) == {"loss/E_recon_h", "loss/E_recon_g"}
