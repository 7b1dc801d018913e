"""Every 3D generator family (and the 2D ones) takes C image channels from the data: a training step
and sampling with C = 2."""

import pytest
import torch
import yaml

from synthmed.models.registry import DataInfo, build_model

DIFFUSION = {"channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8, "norm_num_groups": 4}
GAN = {"latent_dim": 16, "base_channels": 4, "max_channels": 16}
FAMILIES = [
    ("dcgan3d", GAN, (16, 16, 16)),
    ("wgan3d", {**GAN, "n_critic": 1}, (16, 16, 16)),
    ("dcgan3d", {**GAN, "pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}, (16, 16, 16)),
    ("diffusion", {**DIFFUSION, "variant": "joint"}, (16, 16, 16)),
    ("diffusion", {**DIFFUSION, "variant": "mask_conditional"}, (16, 16, 16)),
    ("hagan", "configs/hagan_toy16.yaml", (16, 16, 16)),
    ("dcgan2d", GAN, (32, 32)),
    ("fastgan", "configs/fastgan_64.yaml", (64, 64)),
]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name,params,shape", FAMILIES, ids=[f"{f[0]}-{i}" for i, f in enumerate(FAMILIES)])
def test_two_image_channels_train_and_sample(name, params, shape):
    if isinstance(params, str):
        params = yaml.safe_load(open(params))["model"]["params"]
    torch.manual_seed(0)
    model = build_model(name, params, DataInfo(shape, 2, 3))
    images = torch.rand(4, 2, *shape) * 2 - 1
    masks = torch.randint(0, 3, (4, *shape))
    real = model.codec.encode(images, masks)
    assert real.shape[1] >= 2 and torch.equal(model.codec.decode(real)[1], masks)
    for phase in model.phases():
        losses = model.accumulate_gradients(phase.name, real)
        assert all(torch.isfinite(v) for v in losses.values()), (phase.name, losses)
    options = {"steps": 2} if name == "diffusion" else {}
    if params.get("variant") == "mask_conditional":
        options["masks"] = masks[:2]
    sampled, labels = model.sample(2, seed=0, **options)
    assert sampled.shape == (2, 2, *shape) and labels.shape == (2, *shape)
    assert not torch.equal(sampled[:, 0], sampled[:, 1])  # two channels, not one copied
