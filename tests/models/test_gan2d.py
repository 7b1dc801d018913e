"""2D DCGAN / WGAN (dcgan2d, wgan2d): the same module as the 3D baselines, with 2D layers."""

import pytest
import torch
from torch import nn

from synthmed.errors import UserError
from synthmed.models.registry import DataInfo, build_model

TINY = {"latent_dim": 8, "base_channels": 4, "max_channels": 16}


@pytest.mark.parametrize("name", ["dcgan2d", "wgan2d"])
@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize("encoding,mask_channels", [("onehot", 3), ("scaled", 1)])
def test_shapes_of_gray_and_rgb_pairs(name, image_channels, encoding, mask_channels):
    params = {**TINY, "pairing": {"mask_encoding": encoding}}
    model = build_model(name, params, DataInfo((32, 32), image_channels, 3))
    fake = model.nets["G"](torch.randn(2, 8))
    assert fake.shape == (2, image_channels + mask_channels, 32, 32)
    assert model.nets["D"](fake).shape == (2,)
    images, masks = model.sample(3, seed=0)
    assert images.shape == (3, image_channels, 32, 32) and images.abs().max() <= 1
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.int64 and 0 <= masks.min() and masks.max() <= 2


@pytest.mark.parametrize("shape", [(16, 16), (64, 32), (16, 24)])
def test_anisotropic_shapes_use_2d_layers(shape):
    model = build_model("dcgan2d", TINY, DataInfo(shape, 1, 2))
    assert model.nets["G"](torch.randn(1, 8)).shape == (1, 3, *shape)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d))]
    assert convs and not any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d)) for m in model.modules())


def test_zconcat_doubles_the_width_and_splits_back():
    params = {**TINY, "pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}
    model = build_model("dcgan2d", params, DataInfo((32, 16), 1, 2))
    assert model.nets["G"](torch.randn(1, 8)).shape == (1, 1, 32, 32)
    images, masks = model.sample(2, seed=0)
    assert images.shape == (2, 1, 32, 16) and masks.shape == (2, 32, 16)


@pytest.mark.parametrize(
    "name,shape,message",
    [
        ("dcgan2d", (16, 16, 16), "'dcgan2d' generates 2D images .* shape \\[16, 16, 16\\] .* use 'dcgan3d'"),
        ("wgan2d", (16, 16, 16), "use 'wgan3d'"),
        ("dcgan3d", (32, 32), "'dcgan3d' generates 3D volumes .* shape \\[32, 32\\] .* use 'dcgan2d'"),
        ("wgan3d", (32, 32), "use 'wgan2d'"),
        ("dcgan2d", (12, 16), "image shape \\[12, 16\\] is not supported"),
        ("wgan2d", (4, 4), "image shape \\[4, 4\\] is not supported"),
    ],
)
def test_wrong_dimensionality_or_shape_is_a_user_error(name, shape, message):
    with pytest.raises(UserError, match=message):
        build_model(name, TINY, DataInfo(shape, 1, 2))


def test_sampling_is_seeded_and_batch_independent():
    model = build_model("wgan2d", TINY, DataInfo((32, 32), 3, 2))
    a_img, a_mask = model.sample(5, seed=3, batch_size=5)
    b_img, b_mask = model.sample(5, seed=3, batch_size=2)
    c_img, _ = model.sample(5, seed=4)
    assert torch.allclose(a_img, b_img, atol=1e-6) and torch.equal(a_mask, b_mask)
    assert not torch.allclose(a_img, c_img)


def test_discriminator_sees_real_and_fake_in_separate_passes():
    model = build_model("dcgan2d", TINY, DataInfo((32, 32), 1, 2))  # batch norm in D
    real = model.codec.encode(torch.rand(4, 1, 32, 32) * 2 - 1, torch.randint(0, 2, (4, 32, 32)))
    seen = []
    model.nets["D"].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    model.accumulate_gradients("D", real)
    assert len(seen) == 2 and torch.equal(seen[0], real)
    assert seen[1].shape == real.shape and not any(torch.equal(f, r) for f in seen[1] for r in real)


def test_gradient_penalty_in_2d_is_finite_and_reaches_every_critic_weight():
    model = build_model("wgan2d", TINY, DataInfo((32, 32), 1, 2))
    real = model.codec.encode(torch.rand(2, 1, 32, 32) * 2 - 1, torch.randint(0, 2, (2, 32, 32)))
    out = model.accumulate_gradients("D", real)
    assert torch.isfinite(out["gradient_penalty"]) and out["gradient_penalty"] >= 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.nets["D"].parameters())
