"""Latent diffusion (``variant: latent``, MAISI's approach for large volumes): an ``AutoencoderKL`` compresses
the pair's network tensor (image and signed one-hot mask channels, as ``joint``) by ``2^(levels - 1)`` per
side, and the diffusion U-Net learns the scaled latents.

Two phases, one after the other: ``autoencoder`` (L1 reconstruction + ``kl_weight`` x KL) for the first
``autoencoder.steps`` steps, then ``denoise`` on the frozen autoencoder's latents. The scale factor
(1 / std of the first diffusion batch's latents, unless given) is measured at the first ``denoise`` step.
The trainer's EMA follows the U-Net; sampling decodes with the trained autoencoder.

With ``params.controlnet`` a third phase, ``controlnet``, follows ``controlnet.unet_steps`` U-Net steps: a
ControlNet on the mask learns to steer the frozen U-Net (`synthmed.models.diffusion.controlnet`), and the
model renders images for given masks (its decoded mask channels are dropped; the given mask is the pair's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import ControlNet
from torch import nn

from synthmed.errors import UserError
from synthmed.models.base import Phase
from synthmed.models.diffusion.autoencoder import LatentAutoencoder
from synthmed.models.diffusion.controlnet import MaskControlNet
from synthmed.models.diffusion.model import Diffusion, DiffusionParams, check_data_shape, make_unet
from synthmed.models.registry import DataInfo


class LatentDiffusion(Diffusion):
    """A diffusion U-Net on the latents of an autoencoder trained first."""

    def make_nets(self, data: DataInfo) -> dict[str, nn.Module]:
        ae = self.params.autoencoder
        spatial_dims = check_data_shape(self.shape, len(ae.channels), "autoencoder", "model.params.autoencoder.channels")
        self.sample_channels = ae.latent_channels
        self.sample_shape = tuple(side // ae.downsampling for side in self.shape)
        check_data_shape(self.sample_shape, len(self.params.channels), "U-Net (on the latent)", "model.params.channels")
        nets = {"autoencoder": LatentAutoencoder(ae, spatial_dims, self.codec.channels),
                "unet": make_unet(self.params, spatial_dims, self.sample_channels, self.sample_channels)}
        if self.params.controlnet is not None:
            nets["controlnet"] = make_controlnet(self.params, spatial_dims, self.sample_channels, self.codec.num_labels)
        return nets

    def phases(self) -> list[Phase]:
        switch = self.params.autoencoder.steps
        if self.params.controlnet is None:
            return [Phase("autoencoder", "autoencoder", stop_step=switch), Phase("denoise", "unet", start_step=switch)]
        control = switch + self.params.controlnet.unet_steps
        return [Phase("autoencoder", "autoencoder", stop_step=switch),
                Phase("denoise", "unet", start_step=switch, stop_step=control),
                Phase("controlnet", "controlnet", start_step=control)]

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        signed = self._onehot_to_signed(real, self.codec.image_channels)
        if phase == "autoencoder":
            losses = self.training_nets["autoencoder"](signed)
            losses["total"].backward()
            return {"loss/recon": losses["recon"].detach(), "loss/kl": losses["kl"].detach()}
        if phase not in ("denoise", "controlnet"):
            raise ValueError(f"unknown phase {phase!r}")
        clean = self.nets["autoencoder"].encode(signed)
        noisy, timesteps, target = self.process.training_example(clean)
        labels = self.training_classes(classes, real.shape[0], real.device)
        if phase == "denoise":
            predict = self._predictor(self.training_nets["unet"], None, labels)
        else:
            unet = self._frozen_unet()
            condition = self.condition_of(self.codec.decode(real)[1]).to(real.dtype)
            predict = self._predictor(unet, condition, labels, controlnet=self.training_nets["controlnet"])
        loss = F.mse_loss(predict(noisy, timesteps).float(), target.float())
        loss.backward()
        return {f"loss/{phase}": loss.detach()}

    def _frozen_unet(self) -> nn.Module:
        """The U-Net of the ControlNet phase: at the phase's first step it takes its EMA weights (those sampling
        uses; the EMA no longer moves) and the ControlNet starts as its copy; from then on it is frozen."""
        unet, controlnet = self.nets["unet"], self.nets["controlnet"]
        if not bool(controlnet.initialised):
            unet.load_state_dict(self.ema_net.state_dict())
            controlnet.start_from(unet)
        return unet.requires_grad_(False)

    def sampling_inputs(self, n: int, rng: torch.Generator, **options) -> dict:
        """As `Diffusion.sampling_inputs`; a ControlNet model must have reached its ControlNet phase.

        Raises:
            UserError: a run stopped before its ControlNet trained (its images would ignore the masks).
        """
        if "controlnet" in self.nets and not bool(self.nets["controlnet"].initialised):
            start = self.params.autoencoder.steps + self.params.controlnet.unet_steps
            raise UserError(f"this run stopped before its ControlNet phase (from step {start}), so its images would "
                            "ignore the masks; resume training past that step")
        return super().sampling_inputs(n, rng, **options)

    def sampling_networks(self) -> dict[str, nn.Module]:
        nets = {"autoencoder": self.nets["autoencoder"]}  # decodes the sampled latents
        if "controlnet" in self.nets:
            nets["controlnet"] = self.nets["controlnet"]
        return nets

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, *S] in [-1, 1] and masks [B, *S]: latents from x_T = ``z``, decoded by the autoencoder;
        with a ControlNet, steered by the given masks, which are the pairs' masks."""
        mask = None if inputs["masks"] is None else inputs["masks"][part]
        condition = None if mask is None else self.condition_of(mask).to(z.device)
        controlnet = None if mask is None else self.nets["controlnet"]
        generators = [torch.Generator(device=z.device).manual_seed(int(s)) for s in inputs["seeds"][part]]
        predict = self.predictor_for(net, condition, part, inputs, z.device, controlnet)
        latents = self.process.sample(predict, z, inputs["sampler"], inputs["steps"], generators)
        images, masks = self.codec.decode(self.nets["autoencoder"].decode(latents))
        if mask is None:
            return images, masks
        return images, (mask > 0).long() if self.codec.config.binarize else mask

    @torch.no_grad()
    def reconstruction_error(self, real: torch.Tensor) -> float:
        """Mean absolute error of the autoencoder's round trip (posterior mean) of network tensors."""
        signed = self._onehot_to_signed(real, self.codec.image_channels)
        ae = self.nets["autoencoder"].kl
        return float((ae.decode(ae.encode(signed)[0]).float().clamp(-1, 1) - signed).abs().mean())


def make_controlnet(params: DiffusionParams, spatial_dims: int, latent_channels: int, mask_channels: int) -> MaskControlNet:
    """MONAI's ControlNet with the U-Net's architecture, its conditioning embedding taking the full-size mask."""
    net = ControlNet(
        spatial_dims=spatial_dims, in_channels=latent_channels, num_res_blocks=params.num_res_blocks,
        channels=params.channels, attention_levels=params.attention_levels, norm_num_groups=params.norm_num_groups,
        num_head_channels=params.num_head_channels,
        num_class_embeds=params.num_classes + 1 if params.num_classes else None,
        conditioning_embedding_in_channels=mask_channels,
        conditioning_embedding_num_channels=params.controlnet.embedding_channels,
    )
    return MaskControlNet(net, params.controlnet.conditioning_scale)
