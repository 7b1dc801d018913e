"""Latent diffusion (``variant: latent``, MAISI's approach for large volumes): an ``AutoencoderKL`` compresses
the pair's network tensor (image and signed one-hot mask channels, as ``joint``) by ``2^(levels - 1)`` per
side, and the diffusion U-Net learns the scaled latents.

Two phases, one after the other: ``autoencoder`` (L1 reconstruction + ``kl_weight`` x KL) for the first
``autoencoder.steps`` steps, then ``denoise`` on the frozen autoencoder's latents. The scale factor
(1 / std of the first diffusion batch's latents, unless given) is measured at the first ``denoise`` step.
The trainer's EMA follows the U-Net; sampling decodes with the trained autoencoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.models.base import Phase
from synthmed.models.diffusion.autoencoder import LatentAutoencoder
from synthmed.models.diffusion.model import Diffusion, check_data_shape, make_unet
from synthmed.models.registry import DataInfo


class LatentDiffusion(Diffusion):
    """A diffusion U-Net on the latents of an autoencoder trained first."""

    def make_nets(self, data: DataInfo) -> dict[str, nn.Module]:
        ae = self.params.autoencoder
        spatial_dims = check_data_shape(self.shape, len(ae.channels), "autoencoder", "model.params.autoencoder.channels")
        self.sample_channels = ae.latent_channels
        self.sample_shape = tuple(side // ae.downsampling for side in self.shape)
        check_data_shape(self.sample_shape, len(self.params.channels), "U-Net (on the latent)", "model.params.channels")
        return {"autoencoder": LatentAutoencoder(ae, spatial_dims, self.codec.channels),
                "unet": make_unet(self.params, spatial_dims, self.sample_channels, self.sample_channels)}

    def phases(self) -> list[Phase]:
        switch = self.params.autoencoder.steps
        return [Phase("autoencoder", "autoencoder", stop_step=switch), Phase("denoise", "unet", start_step=switch)]

    def accumulate_gradients(self, phase: str, real: torch.Tensor, classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        signed = self._onehot_to_signed(real, self.codec.image_channels)
        if phase == "autoencoder":
            losses = self.training_nets["autoencoder"](signed)
            losses["total"].backward()
            return {"loss/recon": losses["recon"].detach(), "loss/kl": losses["kl"].detach()}
        if phase != "denoise":
            raise ValueError(f"unknown phase {phase!r}")
        clean = self.nets["autoencoder"].encode(signed)
        noisy, timesteps, target = self.process.training_example(clean)
        labels = self.training_classes(classes, real.shape[0], real.device)
        output = self._predictor(self.training_nets["unet"], None, labels)(noisy, timesteps)
        loss = F.mse_loss(output.float(), target.float())
        loss.backward()
        return {"loss/denoise": loss.detach()}

    def sampling_networks(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.nets["autoencoder"]}  # decodes the sampled latents

    def render(self, net: nn.Module, z: torch.Tensor, part: slice, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, C, *S] in [-1, 1] and masks [B, *S]: latents from x_T = ``z``, decoded by the autoencoder."""
        generators = [torch.Generator(device=z.device).manual_seed(int(s)) for s in inputs["seeds"][part]]
        predict = self.predictor_for(net, None, part, inputs, z.device)
        latents = self.process.sample(predict, z, inputs["sampler"], inputs["steps"], generators)
        return self.codec.decode(self.nets["autoencoder"].decode(latents))

    @torch.no_grad()
    def reconstruction_error(self, real: torch.Tensor) -> float:
        """Mean absolute error of the autoencoder's round trip (posterior mean) of network tensors."""
        signed = self._onehot_to_signed(real, self.codec.image_channels)
        ae = self.nets["autoencoder"].kl
        return float((ae.decode(ae.encode(signed)[0]).float().clamp(-1, 1) - signed).abs().mean())
