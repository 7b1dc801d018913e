"""``sample --seeds``: pair k is a function of seed k alone, for every family, in any order or batch size."""

import json

import numpy as np
import pytest
import torch

from synthmed.cli import main
from synthmed.errors import UserError
from synthmed.models.registry import DataInfo, build_model
from synthmed.sample.mask_sources import deformed_training_masks
from synthmed.sample.sampler import parse_seeds, sample_to_folder
from synthmed.sample.synthetic_set import load_synthetic_set
from synthmed.train.checkpoint import load_generator
from tests.sample.test_sampler_2d import _run

SG2 = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16, "augment": {"mode": "none"}}
DIFFUSION = {"channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8, "norm_num_groups": 4,
             "sample_steps": 3}
MODELS = {
    "dcgan3d": ("dcgan3d", {"latent_dim": 16, "base_channels": 4, "max_channels": 16}, (16, 16, 16)),
    "fastgan": ("fastgan", {}, (32, 32)),
    "stylegan2_csg": ("stylegan2", {**SG2, "variant": "C-SG"}, (32, 32)),
    "diffusion_ddpm": ("diffusion", {**DIFFUSION, "num_classes": 2}, (16, 16)),
}


def test_seed_lists_and_ranges_are_parsed_in_order():
    assert parse_seeds("0-3,200,7") == [0, 1, 2, 3, 200, 7]
    assert parse_seeds("5") == [5]
    for bad, problem in [("3-1", "backwards"), ("a", "neither"), ("1,1", "twice"), ("-2", "neither")]:
        with pytest.raises(UserError, match=problem):
            parse_seeds(bad)


def _model(key):
    name, params, shape = MODELS[key]
    torch.manual_seed(0)
    model = build_model(name, params, DataInfo(shape, 1, 3)).eval()
    for p in model.ema_net.parameters():  # untrained weights, perturbed so outputs differ visibly per seed
        p.data.add_(0.05 * torch.randn_like(p))
    return model, shape


@pytest.mark.parametrize("key", sorted(MODELS))
def test_a_seed_gives_the_same_pair_whatever_else_is_drawn(key):
    model, shape = _model(key)
    masks = torch.randint(0, 3, (10, *shape), generator=torch.Generator().manual_seed(1))
    conditional = model.capabilities.mask_conditional

    def draw(seeds, batch_size):
        given = masks[seeds] if conditional else None  # mask k belongs to seed k
        return model.sample_seeds(seeds, batch_size=batch_size, masks=given)

    images, labels = draw([5, 1, 9], batch_size=2)
    images_b, labels_b = draw([9, 3, 5], batch_size=1)
    alone, alone_labels = model.sample(1, seed=9, masks=masks[[9]] if conditional else None)
    assert torch.allclose(images[2], images_b[0], atol=1e-5) and torch.equal(labels[2], labels_b[0])
    assert torch.allclose(images[0], images_b[2], atol=1e-5) and torch.equal(labels[0], labels_b[2])
    assert torch.allclose(images[2], alone[0], atol=1e-5) and torch.equal(labels[2], alone_labels[0])
    assert (images[0] - images[1]).abs().max() > 1e-3  # different seeds, different pairs


def test_seeds_on_the_command_line_regenerate_the_same_files(toy_pipeline, tmp_path):
    run = str(toy_pipeline["run"])
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["sample", "--checkpoint", run, "--seeds", "0-3,9", "--out", str(first), "--batch-size", "3"]) == 0
    assert main(["sample", "--checkpoint", run, "--seeds", "9,2", "--out", str(second), "--batch-size", "1"]) == 0
    card = json.loads((first / "card.json").read_text())
    assert card["seeds"] == [0, 1, 2, 3, 9] and card["seed"] is None and card["count"] == 5
    assert json.loads((second / "card.json").read_text())["seeds"] == [9, 2]
    images, masks, _ = load_synthetic_set(first, (16, 16, 16))
    images_b, masks_b, _ = load_synthetic_set(second, (16, 16, 16))
    assert np.allclose(images[4], images_b[0], atol=1e-3) and np.array_equal(masks[4], masks_b[0])
    assert np.allclose(images[2], images_b[1], atol=1e-3) and np.array_equal(masks[2], masks_b[1])
    assert not np.allclose(images[0], images[1], atol=1e-3)


def test_seeds_and_n_are_alternatives(toy_pipeline, tmp_path):
    code = main(["sample", "--checkpoint", str(toy_pipeline["run"]), "--seeds", "0-3", "-n", "4",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2-step StyleGAN2 M-SG and C-SG runs on the 32² toy set."""
    from synthmed.data.toy2d import prepare_toy_2d

    root = tmp_path_factory.mktemp("seeds_sg2")
    manifest = prepare_toy_2d(root / "toy2d", n=24, size=32)
    return {variant: _run(manifest, root / variant, variant) for variant in ("M-SG", "C-SG")}


def test_a_mask_conditional_model_takes_each_seeds_own_training_mask(runs, tmp_path):
    csg = runs["C-SG"]
    both = sample_to_folder(csg, None, tmp_path / "both", seeds=[4, 11], batch_size=2)
    alone = sample_to_folder(csg, None, tmp_path / "alone", seeds=[11], batch_size=1)
    _, masks, _ = load_synthetic_set(both, (32, 32))
    _, masks_alone, _ = load_synthetic_set(alone, (32, 32))
    assert np.array_equal(masks[1], masks_alone[0])
    _, state = load_generator(csg)
    expected, _ = deformed_training_masks(state["data"], 1, seed=11)  # seed 11's mask: what n=1, seed=11 deforms
    assert np.array_equal(masks_alone[0], expected[0])
    pairs = json.loads((both / "card.json").read_text())["config"]["masks"]["pairs"]
    assert [p["seed"] for p in pairs] == [4, 11]


def test_mc_sg_and_a_mask_folder_give_each_seed_its_own_mask(runs, tmp_path):
    chain = dict(mask_checkpoint=runs["M-SG"])
    many = sample_to_folder(runs["C-SG"], None, tmp_path / "many", seeds=[2, 6, 9], batch_size=3, **chain)
    one = sample_to_folder(runs["C-SG"], None, tmp_path / "one", seeds=[6], batch_size=1, **chain)
    images, masks, _ = load_synthetic_set(many, (32, 32))
    images_one, masks_one, _ = load_synthetic_set(one, (32, 32))
    assert np.array_equal(masks[1], masks_one[0]) and np.allclose(images[1], images_one[0], atol=1)
    folder = sample_to_folder(runs["C-SG"], None, tmp_path / "folder", seeds=[2, 0], masks_dir=many)
    _, folder_masks, _ = load_synthetic_set(folder, (32, 32))
    assert np.array_equal(folder_masks, masks[[2, 0]])  # seed k renders the folder's mask number k
    with pytest.raises(UserError, match="out of range"):
        sample_to_folder(runs["C-SG"], None, tmp_path / "beyond", seeds=[3], masks_dir=many)
