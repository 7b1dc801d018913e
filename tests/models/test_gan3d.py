import pytest
import torch

from synthmed.errors import UserError
from synthmed.models.dcgan import num_halvings
from synthmed.models.registry import DataInfo, build_model, look_up_model


@pytest.mark.parametrize("name", ["dcgan3d", "wgan3d"])
@pytest.mark.parametrize("shape", [(16, 16, 16), (32, 32, 32), (32, 32, 16), (16, 24, 16)])
def test_generator_and_discriminator_shapes(name, shape):
    model = build_model(name, {"latent_dim": 8, "base_channels": 4, "max_channels": 16}, DataInfo(shape, 1, 3))
    fake = model.nets["G"](torch.randn(2, 8))
    assert fake.shape == (2, 4, *shape)  # 1 image channel + 3 label channels
    assert model.nets["D"](fake).shape == (2,)
    images, masks = model.sample(3, seed=0)
    assert images.shape == (3, 1, *shape) and images.abs().max() <= 1
    assert masks.shape == (3, *shape) and masks.dtype == torch.int64 and masks.max() <= 2


def test_zconcat_generator_doubles_depth_and_splits_back():
    params = {"latent_dim": 8, "base_channels": 4, "pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}
    model = build_model("dcgan3d", params, DataInfo((16, 16, 8), 1, 3))
    assert model.nets["G"](torch.randn(1, 8)).shape == (1, 1, 16, 16, 16)
    images, masks = model.sample(2, seed=1)
    assert images.shape == (2, 1, 16, 16, 8) and masks.shape == (2, 16, 16, 8)


def test_sampling_is_seeded_and_batch_independent():
    model = build_model("dcgan3d", {"latent_dim": 8, "base_channels": 4}, DataInfo((16, 16, 16), 1, 2))
    a_img, a_mask = model.sample(5, seed=3, batch_size=5)
    b_img, b_mask = model.sample(5, seed=3, batch_size=2)
    c_img, _ = model.sample(5, seed=4)
    assert torch.allclose(a_img, b_img, atol=1e-6) and torch.equal(a_mask, b_mask)
    assert not torch.allclose(a_img, c_img)


@pytest.mark.parametrize("shape", [(12, 16, 16), (6, 8, 8), (16, 16, 18)])
def test_unsupported_shapes_are_refused(shape):
    with pytest.raises(UserError, match="not supported"):
        num_halvings(shape)


def test_registry_names_and_errors():
    assert [look_up_model(name).name for name in ("dcgan3d", "wgan3d")] == ["dcgan3d", "wgan3d"]
    with pytest.raises(UserError, match="Did you mean 'dcgan3d'"):
        build_model("dcgan", {}, DataInfo((16, 16, 16), 1, 2))
    with pytest.raises(UserError, match="model.params.latent_dimm: unknown key"):
        build_model("dcgan3d", {"latent_dimm": 3}, DataInfo((16, 16, 16), 1, 2))
    with pytest.raises(UserError, match="model.params.constraint"):
        build_model("wgan3d", {"constraint": "spectral"}, DataInfo((16, 16, 16), 1, 2))


def test_weight_clipping_bounds_the_critic():
    model = build_model("wgan3d", {"latent_dim": 8, "base_channels": 4, "constraint": "clip", "clip_value": 0.01,
                                   "d_norm": "batch"}, DataInfo((16, 16, 16), 1, 2))
    real = model.codec.encode(torch.rand(2, 1, 16, 16, 16) * 2 - 1, torch.randint(0, 2, (2, 16, 16, 16)))
    opt = torch.optim.SGD(model.nets["D"].parameters(), lr=10.0)
    model.accumulate_gradients("D", real)
    opt.step()
    model.after_optimizer_step("D")
    assert max(p.abs().max().item() for p in model.nets["D"].parameters()) <= 0.01 + 1e-7


def test_gradient_penalty_is_reported_and_finite():
    model = build_model("wgan3d", {"latent_dim": 8, "base_channels": 4}, DataInfo((16, 16, 16), 1, 2))
    real = model.codec.encode(torch.rand(2, 1, 16, 16, 16) * 2 - 1, torch.randint(0, 2, (2, 16, 16, 16)))
    out = model.accumulate_gradients("D", real)
    assert torch.isfinite(out["gradient_penalty"]) and out["gradient_penalty"] >= 0
    assert all(p.grad is not None for p in model.nets["D"].parameters())
