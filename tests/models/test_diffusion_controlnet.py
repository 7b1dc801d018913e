"""Latent diffusion with a ControlNet on the mask: shapes, the third phase, exact resume, mask sources, learning."""

import json
from pathlib import Path

import pytest
import torch

from synthmed.data.dataset import load_arrays
from synthmed.data.manifest import load_manifest
from synthmed.errors import UserError
from synthmed.models.registry import DataInfo, build_model, validate_params
from synthmed.sample.sampler import sample_to_folder
from synthmed.train.checkpoint import EMA_KEY, list_checkpoints, load_generator
from synthmed.train.config import TrainSection, resolve_config
from synthmed.train.loop import TrainStep, train

AE = {"channels": [8, 8, 8], "latent_channels": 3, "norm_num_groups": 4}  # latent: a quarter of each side
TINY = {"variant": "latent", "channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8,
        "norm_num_groups": 4}
pytestmark = pytest.mark.usefixtures("one_thread")


def controlnet_model(shape=(32, 32), labels=3, ae_steps=1, unet_steps=1, **params):
    torch.manual_seed(0)
    return build_model("diffusion", {**TINY, "autoencoder": {**AE, "steps": ae_steps},
                                     "controlnet": {"unet_steps": unet_steps}, **params}, DataInfo(shape, 1, labels))


def real_batch(model, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, *model.shape, generator=g) * 2 - 1
    masks = torch.randint(0, model.codec.num_labels, (n, *model.shape), generator=g)
    return model.codec.encode(images, masks)


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_shapes_phases_and_images_for_the_given_masks_in_2d_and_3d(shape):
    model = controlnet_model(shape)
    assert model.capabilities.mask_conditional
    assert [(p.name, p.start_step, p.stop_step) for p in model.phases()] == [
        ("autoencoder", 0, 1), ("denoise", 1, 2), ("controlnet", 2, None)]
    real = real_batch(model)
    for phase in ("autoencoder", "denoise", "controlnet"):
        losses = model.accumulate_gradients(phase, real)
        assert list(losses) == [f"loss/{phase}"] or phase == "autoencoder"
        assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values()), losses
    assert all(p.grad is not None for p in model.nets["controlnet"].parameters())
    assert not any(p.requires_grad for p in model.nets["unet"].parameters())  # frozen in the ControlNet phase
    given = torch.randint(0, 3, (3, *shape))
    images, masks = model.sample(3, seed=0, steps=2, masks=given)
    assert images.shape == (3, 1, *shape) and images.dtype == torch.float32 and torch.equal(masks, given)
    assert images.min() >= -1 and images.max() <= 1
    with pytest.raises(UserError, match="renders images for given masks"):
        model.sample(2, seed=0, steps=2)


def test_the_controlnet_starts_as_the_ema_unet_and_an_untrained_one_changes_nothing():
    model = controlnet_model()
    real = real_batch(model)
    model.accumulate_gradients("denoise", real)
    with torch.no_grad():  # an EMA different from the U-Net, so the copy is visible
        for p in model.ema_net.parameters():
            p.add_(0.01)
    unet, controlnet = model.nets["unet"], model.nets["controlnet"]
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    condition = model.condition_of(model.codec.decode(real)[1])
    model._frozen_unet()
    assert bool(controlnet.initialised)
    assert all(torch.equal(a, b) for a, b in zip(unet.parameters(), model.ema_net.parameters()))
    unet_state = unet.state_dict()
    assert all(torch.equal(v, unet_state[k]) for k, v in controlnet.net.state_dict().items() if k.startswith("down_blocks"))
    with torch.no_grad():
        steered = model._predictor(unet, condition, controlnet=controlnet)(x, t)
        assert torch.equal(steered, unet(x, t))  # zero-initialised output convolutions
    with torch.no_grad():
        for p in unet.parameters():
            p.mul_(0.5)
    model._frozen_unet()  # the copy is made once per run, not at every step
    assert not torch.equal(next(unet.parameters()), next(model.ema_net.parameters()))


def test_bad_controlnet_params_are_refused():
    with pytest.raises(UserError, match="only variant latent"):
        validate_params("diffusion", {"variant": "mask_conditional", "controlnet": {"unet_steps": 5}})
    with pytest.raises(UserError, match="embedding_channels needs 3 entries"):
        validate_params("diffusion", {**TINY, "autoencoder": AE,
                                      "controlnet": {"unet_steps": 5, "embedding_channels": [8, 16]}})
    with pytest.raises(UserError, match="unet_steps"):
        validate_params("diffusion", {**TINY, "autoencoder": AE, "controlnet": {}})


def run_config(manifest: Path, out: Path, steps: int) -> dict:
    return {
        "model": {"name": "diffusion", "params": {**TINY, "autoencoder": {**AE, "steps": 2},
                                                   "controlnet": {"unet_steps": 2}}},
        "data": {"manifest": str(manifest)},
        "optim": {"unet": {"lr": 2e-4}, "autoencoder": {"lr": 1e-3}, "controlnet": {"lr": 1e-3}},
        "train": {"steps": steps, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "progress": False},
        "out": str(out),
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_into_and_within_the_controlnet_phase_is_exact_and_samples_for_mask_sources(toy_prepared_2d, tmp_path):
    straight = train(resolve_config(run_config(toy_prepared_2d, tmp_path / "straight", steps=6)))
    config = run_config(toy_prepared_2d, tmp_path / "resumed", steps=3)
    train(resolve_config(config))  # stops in the U-Net phase, resumes across the switch, then within the phase
    train(resolve_config(config, ["train.steps=5"]), resume=True)
    resumed = train(resolve_config(config, ["train.steps=6"]), resume=True)
    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    losses = [[(k, v) for k, v in sorted(r.items()) if k.startswith("loss/")] for r in a]
    assert losses == [[(k, v) for k, v in sorted(r.items()) if k.startswith("loss/")] for r in b]
    assert [[k for k, _ in step] for step in losses][-2:] == [["loss/controlnet"]] * 2
    final_a = torch.load(list_checkpoints(straight)[-1], weights_only=True)
    final_b = torch.load(list_checkpoints(resumed)[-1], weights_only=True)
    for entry in ("nets", EMA_KEY):
        for name, tensor in final_a[entry].items():
            assert torch.equal(tensor, final_b[entry][name]), name
    assert bool(final_a["nets"]["controlnet.initialised"])
    deformed = sample_to_folder(resumed, 2, tmp_path / "deformed", steps=2)  # the training masks, deformed
    card = json.loads((deformed / "card.json").read_text())
    assert card["config"]["masks"]["kind"] == "deformed_training_masks"
    given = sample_to_folder(resumed, None, tmp_path / "given", masks_dir=deformed, steps=2)  # --masks DIR
    assert len(list((given / "imagesTr").glob("*.png"))) == 2
    from safetensors.torch import load_file

    exported = load_file(resumed / "generator.safetensors")
    model, _ = load_generator(resumed)
    for name, tensor in model.nets["controlnet"].state_dict().items():
        assert torch.equal(exported[f"controlnet.{name}"], tensor), name


@pytest.mark.slow
def test_the_controlnet_learns_to_put_the_bright_disc_where_the_given_mask_is(toy_prepared_2d):
    """Toy discs (+0.6 inside, -0.6 outside: contrast 1.2). The given masks are training masks shifted
    elsewhere, so a model that ignores them has a contrast near 0 inside vs outside them."""
    loaded = load_manifest(toy_prepared_2d)
    images, masks = load_arrays(loaded, loaded.split_ids("train"))
    torch.manual_seed(0)
    model = build_model("diffusion", {
        "variant": "latent", "channels": [16, 32], "attention_levels": [False, False], "norm_num_groups": 8,
        "scheduler": "rflow", "autoencoder": {"channels": [8, 8], "latent_channels": 2, "norm_num_groups": 4, "steps": 60},
        "controlnet": {"unet_steps": 80, "embedding_channels": [8, 16]}}, DataInfo((32, 32), 1, 2))
    real = model.codec.encode(torch.from_numpy(images), torch.from_numpy(masks))
    optimizers = {k: torch.optim.Adam(net.parameters(), lr=2e-3) for k, net in model.nets.items()}
    run = TrainStep(model, optimizers, TrainSection(batch_size=8, ema_kimg=0.02))
    given = torch.from_numpy(masks[:8]).roll(shifts=(9, -7), dims=(1, 2)).long()

    def contrast() -> float:
        drawn, _ = model.sample(8, seed=1, steps=10, masks=given)
        return float(drawn[:, 0][given > 0].mean() - drawn[:, 0][given == 0].mean())

    g = torch.Generator().manual_seed(0)
    for step in range(60 + 80 + 80):
        if step == 140:
            with pytest.raises(UserError, match="stopped before its ControlNet phase"):
                contrast()
            model._frozen_unet()  # the state at the ControlNet phase's first step
            untrained = contrast()
        run(step, real[torch.randint(0, len(real), (8,), generator=g)])
    trained = contrast()
    print(f"contrast inside - outside the given masks (real 1.2): untrained ControlNet {untrained:.3f}, "
          f"after 80 steps {trained:.3f}")
    assert abs(untrained) < 0.2 and trained > 0.4, (untrained, trained)
