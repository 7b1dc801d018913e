"""The model contract: capabilities declared once per family, wrappers outside the state dict, and hooks that
fit an iterative (diffusion-like) sampler as well as a one-pass generator."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthmed.models.base import Capabilities, GenerativeModel, Phase
from synthmed.models.pairing import PairCodec, PairingConfig
from synthmed.models.registry import DataInfo, build_model
from synthmed.train.config import TrainSection
from synthmed.train.loop import TrainStep

HAGAN = {"latent_dim": 8, "feature_channels": 8, "g_max_channels": 8, "d_channels": 4, "d_max_channels": 8}
STYLEGAN2 = {"z_dim": 8, "w_dim": 8, "channel_base": 128, "channel_max": 8}
SMALL = {"latent_dim": 8, "base_channels": 4}


@pytest.mark.parametrize("name,params,shape,expected", [
    ("dcgan3d", SMALL, (16, 16, 16), Capabilities()),
    ("wgan2d", SMALL, (32, 32), Capabilities()),
    ("fastgan", SMALL, (32, 32), Capabilities()),
    ("hagan", HAGAN, (16, 16, 16), Capabilities(encoder=True)),
    ("hagan", {**HAGAN, "num_classes": 3}, (16, 16, 16), Capabilities(num_classes=3, encoder=True)),
    ("stylegan2", {**STYLEGAN2, "variant": "B-SG"}, (32, 32), Capabilities(truncation=True)),
    ("stylegan2", {**STYLEGAN2, "variant": "M-SG"}, (32, 32), Capabilities(outputs="masks", truncation=True)),
    ("stylegan2", {**STYLEGAN2, "variant": "C-SG"}, (32, 32), Capabilities(outputs="images_for_masks", truncation=True)),
])
def test_each_family_declares_its_capabilities(name, params, shape, expected):
    assert build_model(name, params, DataInfo(shape, 1, 2)).capabilities == expected


def test_capabilities_derived_flags():
    assert Capabilities(num_classes=2).class_conditional and not Capabilities().class_conditional
    assert Capabilities(outputs="images_for_masks").mask_conditional and not Capabilities(outputs="masks").mask_conditional
    with pytest.raises(ValueError):
        Capabilities(outputs="volumes")


def test_wrapped_networks_stay_out_of_the_state_dict():
    model = build_model("dcgan3d", SMALL, DataInfo((16, 16, 16), 1, 2))
    keys = list(model.state_dict())
    assert model.training_nets["G"] is model.nets["G"]
    model.wrap(nn.Sequential)  # a wrapper with a module tree of its own, like DistributedDataParallel
    assert isinstance(model.training_nets["D"], nn.Sequential) and model.training_nets["D"][0] is model.nets["D"]
    assert list(model.state_dict()) == keys
    assert {k.split(".")[0] for k in keys} == {"nets", "ema_net"}


class ToyDenoiser(GenerativeModel):
    """A stand-in for a diffusion family: one network, a noise schedule and an iterative sampling loop."""

    ema_target = "unet"

    def __init__(self) -> None:
        super().__init__()
        self.codec = PairCodec(PairingConfig(mask_encoding="scaled"), image_channels=1, num_labels=2)
        self.latent_dim = 0  # the starting noise has the network tensor's shape instead
        self.nets = nn.ModuleDict({"unet": nn.Conv1d(2, 2, 3, padding=1)})
        self.noise_levels = torch.linspace(1.0, 0.0, 6)  # the schedule: no weights, outside `nets`
        self.init_ema()

    def phases(self) -> list[Phase]:
        return [Phase("denoise", "unet")]

    def accumulate_gradients(self, phase, real, classes=None):
        level = self.noise_levels[torch.randint(len(self.noise_levels), ())]
        noise = torch.randn_like(real)
        loss = F.mse_loss(self.training_nets["unet"](real + level * noise), noise)
        loss.backward()
        return {"loss/denoise": loss.detach()}

    def latent(self, n, generator=None):
        return torch.randn(n, 2, 8, generator=generator)

    def sampling_inputs(self, n, rng, **options):
        return {"seeds": torch.randint(0, 2**62, (n,), generator=rng).tolist()}

    def render(self, net, z, part, inputs):
        generators = [torch.Generator().manual_seed(s) for s in inputs["seeds"][part]]
        x = z
        for level in self.noise_levels[1:]:  # one network pass per step, fresh per-sample noise
            fresh = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
            x = x - 0.1 * net(x) + 0.01 * level * fresh
        return self.codec.decode(x.clamp(-1, 1))


def test_an_iterative_sampler_fits_the_hooks():
    torch.manual_seed(0)
    model = ToyDenoiser()
    before = [p.clone() for p in model.ema_net.parameters()]
    step = TrainStep(model, {"unet": torch.optim.SGD(model.nets["unet"].parameters(), lr=0.1)},
                     TrainSection(batch_size=4, ema_kimg=0.001))
    real = model.codec.encode(torch.rand(4, 1, 8) * 2 - 1, torch.randint(0, 2, (4, 8)))
    losses = step(0, real)
    assert [set(d) for d in losses] == [{"loss/denoise"}]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.ema_net.parameters()))  # the EMA follows "unet"
    images, masks = model.sample(5, seed=3, batch_size=5)
    images_2, masks_2 = model.sample(5, seed=3, batch_size=2)
    assert images.shape == (5, 1, 8) and masks.shape == (5, 8)
    assert torch.allclose(images, images_2, atol=1e-6) and torch.equal(masks, masks_2)
