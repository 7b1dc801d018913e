"""Segmentation trainer pieces: model presets, augmentation, pretrain/fine-tune phases, scores."""

import numpy as np
import pytest
import torch

from synthmed.downstream.config import AugmentationSection, ModelSize, TrainSection
from synthmed.downstream.data import CaseArrays
from synthmed.downstream.evaluation import score_cases
from synthmed.downstream.trainer import SegTrainer, build_augmentation, build_segmentation_model
from synthmed.errors import UserError


def sphere_cases(n, shape=(16, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"))
    dist = np.sqrt((grid**2).sum(0))
    masks = np.stack([(dist <= rng.uniform(3, 6)).astype(np.int64) for _ in range(n)])
    images = (masks[:, None] * 1.2 - 0.6 + rng.normal(0, 0.1, (n, 1, *shape))).astype(np.float32)
    return CaseArrays(images, masks, [f"c{i}" for i in range(n)])


@pytest.mark.parametrize("dims", [2, 3])
def test_model_presets_give_logits_per_class(dims):
    shape = (16,) * dims
    model = build_segmentation_model(dims, 3, ModelSize.TINY, shape)
    assert model(torch.zeros(2, 1, *shape)).shape == (2, 3, *shape)
    with pytest.raises(UserError, match="divisible by 8"):
        build_segmentation_model(3, 3, ModelSize.SMALL, (20, 16, 16))


def test_augmentation_keeps_shape_and_label_values():
    aug = build_augmentation(AugmentationSection(affine_prob=1.0, elastic_prob=1.0), (16, 16, 16))
    aug.set_random_state(seed=0)
    cases = sphere_cases(1)
    out = aug({"image": torch.from_numpy(cases.images[0]), "mask": torch.from_numpy(cases.masks[:1]).float()})
    assert out["image"].shape == (1, 16, 16, 16)
    assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}  # nearest keeps labels
    assert not torch.equal(torch.as_tensor(out["mask"]), torch.from_numpy(cases.masks[:1]).float())


def test_trainer_learns_spheres_and_pretrains_then_finetunes():
    data, val = sphere_cases(8), sphere_cases(3, seed=1)
    settings = TrainSection(batch_size=4, model_size="tiny", lr=1e-2, progress=False, device="cpu")
    trainer = SegTrainer(data, val, 2, settings, seed=0, steps=24, val_every=2, pretrain_data=sphere_cases(4, seed=2),
                         pretrain_steps=3)
    trainer.run_training()
    assert [(r.phase, r.step) for r in trainer.history][:3] == [("pretrain", 2), ("pretrain", 3), ("train", 2)]
    assert [r.step for r in trainer.history if r.phase == "train"] == list(range(2, 25, 2))
    best = max(r.val_dice for r in trainer.history if r.phase == "train")
    assert best > 0.7  # an easy task: a bright sphere on a dark background
    assert trainer.final_train_loss == trainer.history[-1].train_loss


@pytest.mark.parametrize("n_cases", [3, 10])
def test_trainer_takes_exactly_its_steps_with_full_batches(n_cases, monkeypatch):
    """The budget is optimiser steps: the same count and batch size whatever the arm's size."""
    settings = TrainSection(batch_size=4, model_size="tiny", progress=False, device="cpu")
    trainer = SegTrainer(sphere_cases(n_cases), sphere_cases(2, seed=1), 2, settings, seed=0, steps=7, val_every=100)
    seen = []
    original = SegTrainer.train_step
    monkeypatch.setattr(SegTrainer, "train_step", lambda self, batch: seen.append(len(batch[0])) or original(self, batch))
    trainer.run_training()
    assert seen == [4] * 7 and [r.step for r in trainer.history] == [7]


def test_scores_known_overlap():
    truth = np.zeros((1, 8, 8, 8), np.int64)
    truth[0, 2:6, 2:6, 2:6] = 1
    pred = np.zeros_like(truth)
    pred[0, 3:7, 2:6, 2:6] = 1  # shifted by one voxel: overlap 3/4
    scores = score_cases(pred, truth, 3, [(2.0, 1.0, 1.0)])
    assert scores["dice"][0].tolist() == [0.75, 1.0]  # label 2 absent in both: 1
    assert scores["hd95"][0].tolist() == [2.0, 0.0]  # one voxel of 2 mm along axis 0
    missed = score_cases(np.zeros_like(truth), truth, 2, [(1.0, 1.0, 1.0)])
    assert missed["dice"][0, 0] == 0 and missed["hd95"][0, 0] == pytest.approx(np.sqrt(3 * 64))
