"""The diffusion family: shapes, seeding, the noise process's arithmetic (oracle round trips), and its errors."""

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from synthmed.errors import UserError
from synthmed.models.diffusion.process import NoiseConfig, NoiseProcess
from synthmed.models.registry import DataInfo, build_model, validate_params

TINY = {"channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8, "norm_num_groups": 4}
pytestmark = pytest.mark.usefixtures("one_thread")


def diffusion(shape=(32, 32), labels=3, image_channels=1, **params):
    torch.manual_seed(0)
    return build_model("diffusion", {**TINY, **params}, DataInfo(shape, image_channels, labels))


def given_masks(n, shape, labels=3):
    return torch.randint(0, labels, (n, *shape), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
@pytest.mark.parametrize("variant,image_channels", [("joint", 1), ("mask_conditional", 1), ("mask_only", 0)])
def test_shapes_and_dtypes_of_every_variant_in_2d_and_3d(shape, variant, image_channels):
    model = diffusion(shape, variant=variant)
    real = model.codec.encode(torch.rand(2, 1, *shape) * 2 - 1, torch.randint(0, 3, (2, *shape)))
    losses = model.accumulate_gradients("denoise", real)
    assert losses["loss/denoise"].ndim == 0 and torch.isfinite(losses["loss/denoise"])
    assert all(p.grad is not None for p in model.nets["unet"].parameters())
    masks = given_masks(3, shape) if variant == "mask_conditional" else None
    images, labels = model.sample(3, seed=0, masks=masks, steps=2)
    assert images.shape == (3, image_channels, *shape) and images.dtype == torch.float32
    assert labels.shape == (3, *shape) and labels.dtype == torch.int64
    assert images.numel() == 0 or (images.min() >= -1 and images.max() <= 1)
    assert set(labels.unique().tolist()) <= {0, 1, 2}
    if masks is not None:
        assert torch.equal(labels, masks)  # the given masks come back as the pairs' masks


def test_unet_input_carries_the_mask_condition_and_outputs_the_image():
    joint, conditional, masks_only = (diffusion(variant=v) for v in ("joint", "mask_conditional", "mask_only"))
    assert (joint.nets["unet"].in_channels, joint.nets["unet"].out_channels) == (4, 4)  # image + 3 one-hot labels
    assert (conditional.nets["unet"].in_channels, conditional.nets["unet"].out_channels) == (4, 1)
    assert (masks_only.nets["unet"].in_channels, masks_only.nets["unet"].out_channels) == (3, 3)
    assert conditional.capabilities.mask_conditional and masks_only.capabilities.outputs == "masks"


@pytest.mark.parametrize("params", [{}, {"scheduler": "rflow"}])
@pytest.mark.parametrize("variant", ["joint", "mask_conditional"])
def test_the_same_seed_gives_the_same_samples_for_any_batch_size(variant, params):
    model = diffusion(variant=variant, **params)
    masks = given_masks(5, (32, 32)) if variant == "mask_conditional" else None
    for sampler in model.capabilities.samplers:
        a_img, a_mask = model.sample(5, seed=3, batch_size=5, masks=masks, sampler=sampler, steps=3)
        b_img, b_mask = model.sample(5, seed=3, batch_size=2, masks=masks, sampler=sampler, steps=3)
        assert torch.allclose(a_img, b_img, atol=1e-5) and torch.equal(a_mask, b_mask), sampler
        c_img, _ = model.sample(5, seed=4, batch_size=5, masks=masks, sampler=sampler, steps=3)
        assert (a_img - c_img).abs().max() > 1e-2, sampler  # another seed, other samples


def test_ddpm_sampler_adds_noise_at_every_step_and_ddim_does_not():
    model = diffusion()
    z = model.latent(2, torch.Generator().manual_seed(0))
    predict = lambda x, t: model.ema_net(x, t)  # noqa: E731
    ddim = [model.process.sample(predict, z, "ddim", 4) for _ in range(2)]
    assert torch.equal(ddim[0], ddim[1])
    generators = lambda seed: [torch.Generator().manual_seed(seed + i) for i in range(2)]  # noqa: E731
    ddpm = [model.process.sample(predict, z, "ddpm", 4, generators(s)) for s in (0, 0, 10)]
    assert torch.equal(ddpm[0], ddpm[1]) and (ddpm[0] - ddpm[2]).abs().max() > 1e-2
    assert (ddpm[0] - ddim[0]).abs().max() > 1e-2


def oracle(process: NoiseProcess, clean: torch.Tensor):
    """A network that knows the clean input: the exact epsilon, v or velocity for any x_t."""
    config, scheduler = process.config, process.scheduler
    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if config.scheduler == "rflow":
            s = (t.float() / process.num_train_timesteps).view(-1, *[1] * (x.ndim - 1))
            noise = (x - (1 - s) * clean) / s
            return clean - noise
        a = scheduler.alphas_cumprod[t.cpu()].view(-1, *[1] * (x.ndim - 1))
        noise = (x - a.sqrt() * clean) / (1 - a).sqrt()
        return noise if scheduler.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * clean
    return predict


PROCESSES = [{"prediction": "epsilon"}, {"prediction": "v_prediction"}, {"prediction": "v_prediction", "schedule": "cosine"},
             {"schedule": "linear_beta", "beta_start": 1e-4, "beta_end": 0.02}, {"scheduler": "rflow"}]


@pytest.mark.parametrize("config", PROCESSES)
def test_oracle_target_recovers_the_clean_input_in_one_scheduler_step(config):
    process = NoiseProcess(NoiseConfig(**config), spatial_dims=2)
    clean = torch.rand(4, 2, 8, 8) * 2 - 1
    torch.manual_seed(0)
    noisy, timesteps, target = process.training_example(clean)  # the target is what the oracle would predict
    assert timesteps.shape == (4,) and not torch.allclose(noisy, clean)
    for i, t in enumerate(timesteps.tolist()):
        if config.get("scheduler") == "rflow":
            process.scheduler.set_timesteps(1)
            recovered, _ = process.scheduler.step(target[i : i + 1], t, noisy[i : i + 1], next_timestep=0)
        else:
            _, recovered = process.scheduler.step(target[i : i + 1], t, noisy[i : i + 1])  # DDIM's x_0 estimate
        assert torch.allclose(recovered, clean[i : i + 1], atol=2e-3), (t, (recovered - clean[i]).abs().max())


@pytest.mark.parametrize("config", PROCESSES)
def test_every_sampler_walks_noise_to_the_clean_input_with_an_oracle(config):
    process = NoiseProcess(NoiseConfig(**config), spatial_dims=3)
    clean = torch.rand(2, 1, 4, 4, 4) * 1.8 - 0.9
    noise = torch.randn(2, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    for sampler in process.samplers:
        for steps in (1, 10, 25):
            generators = [torch.Generator().manual_seed(i) for i in range(2)]
            x = process.sample(oracle(process, clean), noise, sampler, steps, generators)
            assert torch.allclose(x, clean, atol=2e-3), (sampler, steps, (x - clean).abs().max())


def test_trailing_timesteps_start_at_t_minus_one_and_match_the_ddim_stride():
    process = NoiseProcess(NoiseConfig(), spatial_dims=2)
    assert process.sampling_timesteps(10) == list(range(999, 0, -100))
    assert process.sampling_timesteps(1000) == list(range(999, -1, -1))
    steps = process.sampling_timesteps(7)
    assert steps[0] == 999 and len(set(a - b for a, b in zip(steps, steps[1:]))) == 1


def test_ddpm_sampler_at_full_stride_is_monais_ddpm_posterior_step():
    """The ancestral (eta = 1) DDIM update equals DDPMScheduler.step when steps = training timesteps (without
    clipping the x_0 estimate, which the two apply at different places)."""
    betas = dict(schedule="scaled_linear_beta", beta_start=0.0005, beta_end=0.0195, clip_sample=False)
    ddpm, ddim = DDPMScheduler(20, **betas), DDIMScheduler(20, **betas)
    ddim.set_timesteps(20)
    x, output = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6) * 0.5
    for t in (19, 10, 1):
        a, _ = ddpm.step(output, t, x, generator=torch.Generator().manual_seed(t))
        b, _ = ddim.step(output, t, x, eta=1.0, generator=torch.Generator().manual_seed(t))
        assert torch.allclose(a, b, atol=2e-4), t


def test_onehot_masks_are_signed_in_the_diffusion_space_and_decode_back():
    model = diffusion()
    image, mask = torch.rand(2, 1, 32, 32) * 2 - 1, torch.randint(0, 3, (2, 32, 32))
    clean, condition = model._split_real(model.codec.encode(image, mask))
    assert condition is None and set(clean[:, 1:].unique().tolist()) == {-1.0, 1.0}
    decoded_image, decoded_mask = model.codec.decode(clean)
    assert torch.equal(decoded_image, image) and torch.equal(decoded_mask, mask)
    conditional = diffusion(variant="mask_conditional")
    clean, condition = conditional._split_real(conditional.codec.encode(image, mask))
    assert torch.equal(clean, image) and torch.equal(condition.argmax(1), mask) and condition.min() == -1


@pytest.mark.parametrize("shape,params,message", [
    ((31, 32), {}, "divisible by 2"),
    ((32,), {}, "neither 2D nor 3D"),
    ((32, 32), {"channels": [8, 10]}, "norm_num_groups"),
    ((32, 32), {"channels": [8, 12]}, "num_head_channels"),
    ((32, 32), {"attention_levels": [True]}, "attention_levels has 1"),
    ((32, 32), {"scheduler": "rflow", "prediction": "epsilon"}, "velocity"),
    ((32, 32), {"sampler": "rflow"}, "cannot sample a ddpm-trained"),
    ((32, 32), {"pairing": {"layout": "zconcat", "mask_encoding": "scaled"}}, "layout must be 'channel'"),
])
def test_bad_data_or_parameters_are_user_errors(shape, params, message):
    with pytest.raises(UserError, match=message):
        diffusion(shape, **params)


def test_sampling_options_are_checked():
    model, conditional = diffusion(), diffusion(variant="mask_conditional")
    with pytest.raises(UserError, match="offers ddim, ddpm"):
        model.sample(1, seed=0, sampler="rflow")
    with pytest.raises(UserError, match="at most 1000"):
        model.sample(1, seed=0, steps=1001)
    with pytest.raises(UserError, match="--steps must be at least 1"):
        model.sample(1, seed=0, steps=0)
    with pytest.raises(UserError, match="--masks DIR"):
        conditional.sample(1, seed=0)
    with pytest.raises(UserError, match="shape \\[32, 32\\]"):
        conditional.sample(1, seed=0, masks=torch.zeros(1, 16, 16, dtype=torch.long))
    with pytest.raises(UserError, match="labels must lie in 0..2"):
        conditional.sample(1, seed=0, masks=torch.full((1, 32, 32), 3))
    with pytest.raises(UserError, match="does not render images for given masks"):
        model.sample(1, seed=0, masks=given_masks(1, (32, 32)))
    gan = build_model("dcgan2d", {}, DataInfo((64, 64), 1, 2))
    with pytest.raises(UserError, match="only diffusion models"):
        gan.sample(1, seed=0, steps=10)


def test_params_fill_defaults_through_the_registry():
    params = validate_params("diffusion", {"variant": "mask_only"})
    assert params.scheduler == "ddpm" and params.sample_steps == 50 and params.schedule == "scaled_linear_beta"
