"""Segmentation training for the downstream benchmark, in the nnU-Net trainer shape.

`SegTrainer.run_training()` is a short sequence of named hooks; a variant overrides one of them.
Model: MONAI SegResNet (3D) or UNet (2D); loss: DiceCE; optimiser: AdamW; inference: sliding window.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from monai.networks.nets import SegResNet, UNet
from monai.transforms import Compose, Rand2DElasticd, Rand3DElasticd, RandAffined
from torch import nn
from tqdm import tqdm

from synthmed.downstream.config import AugmentationSection, ModelSize, TrainSection
from synthmed.downstream.data import CaseArrays
from synthmed.errors import UserError
from synthmed.train.distributed import select_device

# init_filters, blocks_down; blocks_up has one block fewer than blocks_down (MONAI's layout)
SEGRESNET_PRESETS: dict[ModelSize, tuple[int, tuple[int, ...]]] = {
    ModelSize.TINY: (8, (1, 1, 1)),
    ModelSize.SMALL: (8, (1, 2, 2, 4)),  # MONAI's default SegResNet
    ModelSize.BASE: (16, (1, 2, 2, 4)),
    ModelSize.LARGE: (32, (1, 2, 2, 4)),  # Auto3Dseg's SegResNet width
}
UNET_PRESETS: dict[ModelSize, tuple[int, ...]] = {
    ModelSize.TINY: (8, 16, 32),
    ModelSize.SMALL: (16, 32, 64, 128),
    ModelSize.BASE: (32, 64, 128, 256),
    ModelSize.LARGE: (32, 64, 128, 256, 512),
}


def build_segmentation_model(spatial_dims: int, num_classes: int, size: ModelSize, shape: tuple[int, ...],
                             in_channels: int = 1) -> nn.Module:
    """SegResNet for 3D, UNet for 2D (grayscale or RGB input), sized by `size`.

    Raises:
        UserError: unsupported dimensionality, or a volume too small for the network's down-sampling.
    """
    if spatial_dims == 3:
        filters, blocks_down = SEGRESNET_PRESETS[size]
        levels = len(blocks_down) - 1
        model: nn.Module = SegResNet(spatial_dims=3, init_filters=filters, in_channels=in_channels, out_channels=num_classes,
                                     blocks_down=blocks_down, blocks_up=(1,) * levels)
    elif spatial_dims == 2:
        channels = UNET_PRESETS[size]
        levels = len(channels) - 1
        model = UNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, channels=channels,
                     strides=(2,) * levels, num_res_units=2)
    else:
        raise UserError(f"downstream: manifest shape {list(shape)} is neither 2D nor 3D")
    factor = 2**levels
    if any(s % factor for s in shape):
        raise UserError(f"train.model_size={size.value}: the prepared shape {list(shape)} must be divisible by "
                        f"{factor} ({levels} down-samplings); choose a smaller model_size or another shape")
    return model


def build_augmentation(aug: AugmentationSection, shape: tuple[int, ...]) -> Compose:
    """RandAffine then random elastic deformation on {"image", "mask"} (bilinear / nearest)."""
    dims = len(shape)
    rad = [math.radians(d) for d in aug.rotate_deg][:dims] if dims == 3 else math.radians(aug.rotate_deg[2])
    erad = [math.radians(d) for d in aug.elastic_rotate_deg][:dims] if dims == 3 else math.radians(aug.elastic_rotate_deg[2])
    translate = [f * s for f, s in zip(aug.translate_fraction[-dims:] if dims == 2 else aug.translate_fraction, shape)]
    scale = list(aug.scale[:dims])
    keys, modes = ["image", "mask"], ["bilinear", "nearest"]
    affine = RandAffined(keys, prob=aug.affine_prob, rotate_range=rad, scale_range=scale, translate_range=translate,
                         mode=modes, padding_mode="border")
    elastic_cls = Rand3DElasticd if dims == 3 else Rand2DElasticd
    elastic_kw = {"sigma_range": aug.elastic_sigma, "magnitude_range": aug.elastic_magnitude} if dims == 3 else {
        "spacing": tuple(s // 4 or 1 for s in shape), "magnitude_range": (1.0, 2.0)}
    elastic = elastic_cls(keys, prob=aug.elastic_prob, rotate_range=erad, scale_range=scale, translate_range=translate,
                          mode=modes, padding_mode="border", **elastic_kw)
    return Compose([affine, elastic])


@dataclass
class StepRecord:
    """One validation interval: the mean training loss over its steps and the validation Dice at its end."""

    step: int  # optimiser steps done in this phase
    phase: str  # "pretrain" or "train"
    train_loss: float
    val_dice: float | None  # mean foreground Dice on the fold's real validation cases


@dataclass
class SegTrainer:
    """Trains one segmentation model on one arm, one fold and one seed for a fixed number of optimiser steps.

    Every batch holds `settings.batch_size` cases (indices cycle through reshuffled passes over the
    data), the learning rate is constant, and the model is validated every `val_every` steps and at the
    end, so that arms with equal `steps` get equal budgets and choose their weights at the same points.
    """

    train_data: CaseArrays  # the arm's training cases (real and/or synthetic)
    val_data: CaseArrays  # the fold's real validation cases (learning curve, best-weights choice)
    num_classes: int  # including background
    settings: TrainSection
    seed: int
    steps: int  # optimiser steps of the training phase
    val_every: int  # steps between validations (and one at the last step)
    augmentation: AugmentationSection | None = None  # None: no classical augmentation
    pretrain_data: CaseArrays | None = None  # pretraining cases (pretrain_finetune arms)
    pretrain_steps: int = 0  # optimiser steps of the pretraining phase
    history: list[StepRecord] = field(default_factory=list)
    progress_label: str = ""

    def run_training(self) -> nn.Module:
        """Train (optionally pretrain first) and return the selected model on the CPU."""
        self.on_train_start()
        if self.pretrain_data is not None:
            self.run_phase("pretrain", self.pretrain_data, self.pretrain_steps)
            self.on_pretrain_end()
        self.run_phase("train", self.train_data, self.steps)
        return self.on_train_end()

    def run_phase(self, phase: str, data: CaseArrays, steps: int) -> None:
        batches = self.iterate_batches(data)
        losses: list[float] = []
        for step in range(1, steps + 1):
            self.network.train()
            losses.append(self.train_step(next(batches)))
            if step % self.val_every == 0 or step == steps:
                val = self.validate() if phase == "train" or self.settings.select == "best_val" else None
                self.on_interval_end(StepRecord(step, phase, float(np.mean(losses)), val))
                losses = []

    @property
    def final_train_loss(self) -> float:
        """Mean training loss over the last validation interval of the training phase."""
        train = [r for r in self.history if r.phase == "train"]
        return train[-1].train_loss if train else float("nan")

    # hooks -----------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        torch.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.device = select_device(self.settings.device)
        shape = tuple(self.train_data.images.shape[2:])
        self.network = build_segmentation_model(len(shape), self.num_classes, self.settings.model_size, shape,
                                                in_channels=self.train_data.images.shape[1])
        self.network.to(self.device)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.configure_optimizer()
        self.transforms = build_augmentation(self.augmentation, shape) if self.augmentation else None
        if self.transforms is not None:
            self.transforms.set_random_state(seed=self.seed)
        self.best: tuple[float, dict[str, torch.Tensor]] | None = None
        self.bar = tqdm(total=self.steps + self.pretrain_steps * (self.pretrain_data is not None),
                        desc=self.progress_label, leave=False, disable=not self.settings.progress)
        self.started = time.perf_counter()

    def configure_optimizer(self) -> None:
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.settings.lr,
                                           weight_decay=self.settings.weight_decay)

    def on_pretrain_end(self) -> None:
        # Fine-tuning starts from the pretrained weights with a fresh optimiser; the best-weights choice
        # only considers fine-tuned weights.
        self.configure_optimizer()
        self.best = None

    def iterate_batches(self, data: CaseArrays):
        """Endless full batches: indices run through one random permutation after another."""
        bs, pending = self.settings.batch_size, np.zeros(0, np.int64)
        while True:
            while len(pending) < bs:
                pending = np.concatenate([pending, self.rng.permutation(len(data))])
            index, pending = pending[:bs], pending[bs:]
            images, masks = torch.from_numpy(data.images[index]), torch.from_numpy(data.masks[index])[:, None]
            if self.transforms is not None:
                images, masks = self.augment(images, masks)
            yield images.to(self.device), masks.to(self.device)

    def augment(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = [self.transforms({"image": im, "mask": m.float()}) for im, m in zip(images, masks)]
        return (torch.stack([torch.as_tensor(o["image"]) for o in out]).float(),
                torch.stack([torch.as_tensor(o["mask"]) for o in out]).round().long())

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        images, masks = batch
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss(self.network(images).float(), masks)
        loss.backward()
        self.optimizer.step()
        self.bar.update(1)
        return loss.item()  # a CPU-GPU sync point, once per step

    def autocast(self):
        enabled = self.device.type == "cuda" and self.settings.amp
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def validate(self) -> float | None:
        if not len(self.val_data):
            return None
        probs = predict_probabilities(self.network, self.val_data.images, self.settings, self.device)
        pred = probs.argmax(1)
        return float(np.nanmean(dice_per_label(pred, self.val_data.masks, self.num_classes)))

    def on_interval_end(self, record: StepRecord) -> None:
        self.history.append(record)
        self.bar.set_postfix(phase=record.phase, loss=f"{record.train_loss:.3f}",
                             val_dice="-" if record.val_dice is None else f"{record.val_dice:.3f}")
        if record.phase == "train" and record.val_dice is not None and self.settings.select == "best_val":
            if self.best is None or record.val_dice > self.best[0]:
                self.best = (record.val_dice, copy.deepcopy(self.network.state_dict()))

    def on_train_end(self) -> nn.Module:
        self.bar.close()
        if self.best is not None:
            self.network.load_state_dict(self.best[1])
        self.wall_s = time.perf_counter() - self.started
        return self.network.eval()


@torch.no_grad()
def predict_probabilities(network: nn.Module, images: np.ndarray, settings: TrainSection,
                          device: torch.device, batch_size: int = 4) -> np.ndarray:
    """Softmax probabilities float32 [N, C, *shape] by sliding-window inference."""
    network.eval()
    shape = images.shape[2:]
    roi = tuple(settings.roi_size) if settings.roi_size else tuple(shape)
    if len(roi) != len(shape):
        raise UserError(f"train.roi_size: {list(roi)} has {len(roi)} dimensions, the data has {len(shape)}")
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).to(device)
        logits = sliding_window_inference(x, roi, sw_batch_size=4, predictor=network, overlap=settings.sw_overlap,
                                          mode="gaussian")
        out.append(torch.softmax(logits.float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, *shape), np.float32)


def dice_per_label(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice [N, num_classes-1] of every foreground label; 1 where both are empty, 0 where one is."""
    one_hot = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a).long(), num_classes).movedim(-1, 1)
    return compute_dice(one_hot(pred), one_hot(truth), include_background=False, ignore_empty=False).numpy()
