"""Diffusion and flow models for image/mask pairs, 2D and 3D, on MONAI's ``DiffusionModelUNet``; registered
as ``diffusion`` with ``params.variant``:

- ``joint``: noise -> image and mask channels together (the `PairCodec` tensor; one-hot mask channels are
  mapped from {0, 1} to {-1, 1} so that every channel lies in [-1, 1]); the mask is their argmax.
- ``mask_conditional``: the image for a given mask. The mask's one-hot channels (in {-1, 1}) are
  concatenated to the noisy image at the network's input at every step, as in Med-DDPM; ``sample(masks=...)``
  renders any mask a user brings.
- ``mask_only``: masks alone; chained into ``mask_conditional`` it makes pairs as MC-SG does.
- ``latent``: ``joint`` in the latent space of an ``AutoencoderKL`` trained first (MAISI's approach, for
  large volumes); `synthmed.models.diffusion.latent`. With ``controlnet`` it renders images for given masks
  through a ControlNet on the mask (`synthmed.models.diffusion.controlnet`).

With ``num_classes > 0`` any variant is class-conditional with classifier-free guidance (Ho & Salimans): the
U-Net embeds the class (MONAI's ``num_class_embeds``, one more for the null class), the class is replaced by the
null class with probability ``p_uncond`` in training (and where unknown), and sampling mixes the conditional
and unconditional predictions, uncond + ``guidance_scale`` x (cond - uncond).

The spatial dimensions (2 or 3) come from the data. One phase (``denoise``) updates the U-Net; the trainer's
EMA of it samples. The noise process (training scheduler, prediction target, sampling loop) is
`synthmed.models.diffusion.process`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from pydantic import Field, model_validator
from torch import nn

from synthmed.errors import UserError
from synthmed.models.base import Capabilities, GenerativeModel, Outputs, Phase
from synthmed.models.diffusion.autoencoder import AutoencoderParams
from synthmed.models.diffusion.controlnet import ControlNetParams
from synthmed.models.diffusion.process import NoiseConfig, NoiseProcess
from synthmed.models.pairing import MaskOnlyCodec, PairCodec, PairingConfig
from synthmed.models.registry import DataInfo

Variant = Literal["joint", "mask_conditional", "mask_only", "latent"]
OUTPUTS: dict[str, Outputs] = {"joint": "pairs", "mask_conditional": "images_for_masks", "mask_only": "masks",
                               "latent": "pairs"}


class DiffusionParams(NoiseConfig):
    """The U-Net (MONAI ``DiffusionModelUNet``) and the noise process (`NoiseConfig`)."""

    variant: Variant = "joint"
    channels: list[int] = [32, 64, 64]  # feature maps per resolution level (each level halves the size)
    attention_levels: list[bool] = [False, False, True]  # self-attention at these levels
    num_res_blocks: int = Field(1, ge=1)  # residual blocks per level
    num_head_channels: int = Field(32, ge=1)  # channels per attention head
    norm_num_groups: int = Field(8, ge=1)  # GroupNorm groups; must divide every width
    pairing: PairingConfig = PairingConfig()
    autoencoder: AutoencoderParams | None = None  # variant latent only (default: AutoencoderParams())
    controlnet: ControlNetParams | None = None  # variant latent only: a ControlNet on the mask, trained last
    num_classes: int = Field(0, ge=0)  # > 0: class-conditional (data.class_key) with classifier-free guidance
    p_uncond: float = Field(0.1, ge=0, le=1)  # training: the class is dropped (null class) with this probability
    guidance_scale: float = Field(1.0, ge=0)  # sampling: 1 = conditional only, > 1 = stronger class guidance

    @model_validator(mode="after")
    def _unet_shape(self) -> "DiffusionParams":
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(f"attention_levels has {len(self.attention_levels)} entries, channels {len(self.channels)}")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"every entry of channels {self.channels} must be divisible by norm_num_groups {self.norm_num_groups}")
        if any(a and c % self.num_head_channels for c, a in zip(self.channels, self.attention_levels)):
            raise ValueError(f"channels with attention must be divisible by num_head_channels {self.num_head_channels}")
        if self.pairing.layout != "channel":
            raise ValueError("pairing.layout must be 'channel' for diffusion models")
        if self.variant == "latent" and self.autoencoder is None:
            self.autoencoder = AutoencoderParams()
        if self.variant != "latent" and self.autoencoder is not None:
            raise ValueError(f"autoencoder: only variant latent has one (variant is {self.variant})")
        if self.controlnet is not None:
            self._check_controlnet()
        return self

    def _check_controlnet(self) -> None:
        if self.variant != "latent":
            raise ValueError(f"controlnet: only variant latent has one (variant is {self.variant}; "
                             "mask_conditional takes the mask at its input)")
        levels = len(self.autoencoder.channels)
        if self.controlnet.embedding_channels is None:
            self.controlnet.embedding_channels = [16 * 2**i for i in range(levels)]
        if len(self.controlnet.embedding_channels) != levels:
            raise ValueError(f"controlnet.embedding_channels needs {levels} entries (one per autoencoder level: the "
                             f"mask is downsampled to the latent grid), got {self.controlnet.embedding_channels}")

    @property
    def outputs(self) -> Outputs:
        """What the model draws: a ControlNet makes a latent model render images for given masks."""
        return "images_for_masks" if self.controlnet is not None else OUTPUTS[self.variant]


def check_data_shape(shape: tuple[int, ...], levels: int, network: str = "U-Net",
                     key: str = "model.params.channels") -> int:
    """The spatial dimensions (2 or 3) of data the U-Net (or ``network``) can take.

    Raises:
        UserError: data neither 2D nor 3D, or a side the network's downsampling cannot halve ``levels - 1`` times.
    """
    if len(shape) not in (2, 3):
        raise UserError(f"model diffusion: data of shape {list(shape)} is neither 2D nor 3D")
    factor = 2 ** (levels - 1)
    if any(side % factor for side in shape):
        raise UserError(f"model diffusion: every side of the data shape {list(shape)} must be divisible by {factor} "
                        f"(the {network}'s {levels} levels halve it {levels - 1} times); prepare the data with such a "
                        f"--shape or use fewer {key}")
    return len(shape)


def make_unet(params: DiffusionParams, spatial_dims: int, in_channels: int, out_channels: int) -> DiffusionModelUNet:
    return DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
        num_res_blocks=params.num_res_blocks, channels=params.channels, attention_levels=params.attention_levels,
        norm_num_groups=params.norm_num_groups, num_head_channels=params.num_head_channels,
        num_class_embeds=params.num_classes + 1 if params.num_classes else None,  # the last one: the null class
    )


class Diffusion(GenerativeModel):
    """A denoising U-Net with a noise process: ``joint`` pairs, ``mask_conditional`` images, or ``mask_only`` masks."""

    ema_target = "unet"

    def __init__(self, params: DiffusionParams, data: DataInfo) -> None:
        super().__init__()
        self.params, self.variant, self.shape = params, params.variant, tuple(data.shape)
        if self.variant == "mask_only":
            self.codec = MaskOnlyCodec(params.pairing, data.num_labels)
        else:
            self.codec = PairCodec(params.pairing, data.image_channels, data.num_labels)
        self.nets = nn.ModuleDict(self.make_nets(data))  # sets sample_channels and sample_shape
        spatial_dims = len(self.shape)
        self.process = NoiseProcess(params, spatial_dims, clip=self.variant != "latent")  # no weights: an attribute
        self.capabilities = Capabilities(outputs=params.outputs, num_classes=params.num_classes,
                                         samplers=self.process.samplers, guidance=params.num_classes > 0)
        self.guidance_scale = params.guidance_scale  # sampling only; may be changed on a loaded model
        self.latent_dim = self.sample_channels * math.prod(self.sample_shape)  # x_T, flattened
        self.init_ema()

    def make_nets(self, data: DataInfo) -> dict[str, nn.Module]:
        """The networks; sets the shape of the diffusion space (``sample_channels``, ``sample_shape``)."""
        spatial_dims = check_data_shape(self.shape, len(self.params.channels))
        if self.variant == "mask_conditional":
            self.sample_channels, condition = data.image_channels, self.codec.num_labels
        else:
            self.sample_channels, condition = self.codec.channels, 0
        self.sample_shape = self.shape
        return {"unet": make_unet(self.params, spatial_dims, self.sample_channels + condition, self.sample_channels)}

    # --- network tensor <-> diffusion space -----------------------------------------------------
    def _onehot_to_signed(self, x: torch.Tensor, first_mask_channel: int) -> torch.Tensor:
        """One-hot mask channels {0, 1} -> {-1, 1}; image and scaled-mask channels already lie in [-1, 1]."""
        if self.codec.config.mask_encoding != "onehot":
            return x
        c = first_mask_channel
        return torch.cat([x[:, :c], x[:, c:] * 2 - 1], dim=1)

    def condition_of(self, labels: torch.Tensor) -> torch.Tensor:
        """int masks [B, *S] -> the signed one-hot condition [B, L, *S] in {-1, 1} (binarised if the pairing says so)."""
        labels = (labels > 0).long() if self.codec.config.binarize else labels.long()
        return F.one_hot(labels, self.codec.num_labels).movedim(-1, 1).float() * 2 - 1

    def _split_real(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Network tensor -> (what the process noises, the condition or None)."""
        if self.variant != "mask_conditional":
            return self._onehot_to_signed(real, self.codec.image_channels), None
        _, labels = self.codec.decode(real)
        return real[:, : self.codec.image_channels], self.condition_of(labels).to(real.dtype)

    def _predictor(self, net: nn.Module, condition: torch.Tensor | None, classes: torch.Tensor | None = None,
                   guidance: float = 1.0, controlnet: nn.Module | None = None):
        """(x_t, t) -> the network's output: with the mask condition (concatenated to x_t, or through
        ``controlnet``), and the classes (guided if ``guidance`` != 1)."""
        def call(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, cond: torch.Tensor | None) -> torch.Tensor:
            extra = {} if labels is None else {"class_labels": labels}
            if controlnet is not None:
                down, mid = controlnet(x, t, cond, labels)
                extra.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
            elif cond is not None:
                x = torch.cat([x, cond.to(x.dtype)], dim=1)
            return net(x, t, **extra)

        if classes is None or guidance == 1.0:
            return lambda x, t: call(x, t, classes, condition)

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            null = torch.full_like(classes, self.params.num_classes)
            both_conditions = None if condition is None else torch.cat([condition, condition])
            both = call(torch.cat([x, x]), torch.cat([t, t]), torch.cat([classes, null]), both_conditions)
            conditional, unconditional = both.chunk(2)
            return unconditional + guidance * (conditional - unconditional)
        return guided

    def training_classes(self, classes: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        """Class-conditional models: each case's class, or the null class where unknown (-1) or dropped."""
        if not self.capabilities.class_conditional:
            return None
        null = self.params.num_classes
        labels = torch.full((n,), null, device=device) if classes is None else classes.clone()
        dropped = (torch.rand(n, device=device) < self.params.p_uncond) | (labels < 0)
        return torch.where(dropped, torch.full_like(labels, null), labels)

    # --- training ----------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase("denoise", "unet")]

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if phase != "denoise":
            raise ValueError(f"unknown phase {phase!r}")
        clean, condition = self._split_real(real)
        noisy, timesteps, target = self.process.training_example(clean)
        labels = self.training_classes(classes, real.shape[0], real.device)
        output = self._predictor(self.training_nets["unet"], condition, labels)(noisy, timesteps)
        loss = F.mse_loss(output.float(), target.float())
        loss.backward()
        return {"loss/denoise": loss.detach()}

    # --- sampling ------------------------------------------------------------------------------------
    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T: standard normal noise [n, C, *S] in the diffusion space."""
        return torch.randn(n, self.sample_channels, *self.sample_shape, generator=generator)

    def check_masks(self, n: int, masks: torch.Tensor | None) -> torch.Tensor:
        return self.check_given_masks(n, masks, tuple(self.shape))

    def check_classes(self, n: int, classes: torch.Tensor | list[int] | None, rng: torch.Generator) -> torch.Tensor | None:
        """Each sample's class (class-conditional models): as given, or drawn uniformly from ``rng``.

        Raises:
            UserError: not ``n`` indices in 0..num_classes - 1.
        """
        if not self.capabilities.class_conditional:
            return None
        if classes is None:
            return torch.randint(0, self.params.num_classes, (n,), generator=rng)
        classes = torch.as_tensor(classes, dtype=torch.long)
        classes = classes.expand(n) if classes.dim() == 0 else classes
        if classes.shape != (n,) or classes.min() < 0 or classes.max() >= self.params.num_classes:
            raise UserError(f"classes must be {n} indices in [0, {self.params.num_classes - 1}], got {classes.tolist()}")
        return classes

    def sampling_inputs(self, n: int, rng: torch.Generator, masks: torch.Tensor | None = None,
                        sampler: str | None = None, steps: int | None = None,
                        classes: torch.Tensor | list[int] | None = None, **options) -> dict:
        """The checked masks (mask-conditional), the sampling loop, one seed per sample for the noise the
        ``ddpm`` sampler adds at every step (drawn after x_T, so samples do not depend on ``batch_size``), and
        the classes (class-conditional)."""
        given = self.check_masks(n, masks) if self.capabilities.mask_conditional else None
        if steps is not None and steps > self.process.num_train_timesteps:
            raise UserError(f"--steps {steps}: at most {self.process.num_train_timesteps} (the training timesteps)")
        seeds = torch.randint(0, 2**62, (n,), generator=rng)
        return {"masks": given, "sampler": sampler, "steps": steps, "seeds": seeds,
                "classes": self.check_classes(n, classes, rng)}

    def predictor_for(self, net: nn.Module, condition: torch.Tensor | None, part: slice, inputs: dict, device,
                      controlnet: nn.Module | None = None):
        classes = None if inputs["classes"] is None else inputs["classes"][part].to(device)
        return self._predictor(net, condition, classes, self.guidance_scale, controlnet)

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, *S] in [-1, 1] (C = 0 for ``mask_only``) and masks [B, *S], from x_T = ``z``."""
        mask = None if inputs["masks"] is None else inputs["masks"][part]
        condition = None if mask is None else self.condition_of(mask).to(z.device)
        generators = [torch.Generator(device=z.device).manual_seed(int(s)) for s in inputs["seeds"][part]]
        predict = self.predictor_for(net, condition, part, inputs, z.device)
        x = self.process.sample(predict, z, inputs["sampler"], inputs["steps"], generators)
        if mask is None:
            return self.codec.decode(x)
        return x.float(), (mask > 0).long() if self.codec.config.binarize else mask

