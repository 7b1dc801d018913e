"""How an image and its mask share one network tensor, and how they are split back.

Two layouts:
- ``channel``: the mask is extra output channels. With ``onehot`` encoding the mask channels are a
  softmax over labels (real masks are one-hot); with ``scaled`` encoding it is one tanh channel where
  label l maps to -1 + 2 l / (L - 1) (the thesis's [0, 2] -> [-1, 1]; binary masks become -1 / +1).
- ``zconcat``: the thesis's layout. Image and scaled mask are stacked along the last spatial axis
  (z in RAS array order), so the network sees one channel of twice the depth.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator

from synthmed.errors import UserError


class PairingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layout: Literal["channel", "zconcat"] = "channel"
    mask_encoding: Literal["onehot", "scaled"] = "onehot"
    binarize: bool = False  # merge every foreground label into 1 (the thesis's binarised masks)

    @model_validator(mode="after")
    def _zconcat_needs_scaled(self) -> "PairingConfig":
        if self.layout == "zconcat" and self.mask_encoding != "scaled":
            raise ValueError("pairing.layout 'zconcat' needs pairing.mask_encoding 'scaled' (one channel)")
        return self


class PairCodec:
    """Encodes (image, mask) into the network's tensor and decodes generator output back.

    Raises:
        UserError: the data have fewer than 2 labels (a mask needs background and one structure).
    """

    def __init__(self, config: PairingConfig, image_channels: int, num_labels: int) -> None:
        self.config = config
        self.image_channels = image_channels
        self.num_labels = 2 if config.binarize else num_labels
        if self.num_labels < 2:
            raise UserError(f"data: the manifest lists {self.num_labels} label(s); image/mask pairs need at least 2 "
                            f"(background and one structure)")

    @property
    def channels(self) -> int:
        """Channels of the network tensor."""
        if self.config.layout == "zconcat":
            return self.image_channels
        mask_channels = self.num_labels if self.config.mask_encoding == "onehot" else 1
        return self.image_channels + mask_channels

    def network_shape(self, volume_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial shape the network produces for a volume of ``volume_shape``."""
        if self.config.layout == "zconcat":
            return (*volume_shape[:-1], 2 * volume_shape[-1])
        return tuple(volume_shape)

    def _labels(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask > 0).long() if self.config.binarize else mask.long()

    def _scale(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.float() * (2.0 / (self.num_labels - 1)) - 1.0

    def _unscale(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.round((x.float() + 1.0) * (self.num_labels - 1) / 2.0)
        return labels.clamp(0, self.num_labels - 1).long()

    def encode(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image [B,C,*S] in [-1,1], mask int [B,*S] -> network tensor [B,channels,*S']."""
        labels = self._labels(mask)
        if self.config.layout == "zconcat":
            scaled = self._scale(labels).unsqueeze(1).expand_as(image)
            return torch.cat([image, scaled], dim=-1)
        if self.config.mask_encoding == "scaled":
            return torch.cat([image, self._scale(labels).unsqueeze(1)], dim=1)
        onehot = F.one_hot(labels, self.num_labels).movedim(-1, 1).to(image.dtype)
        return torch.cat([image, onehot], dim=1)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Generator's last activation: tanh for image/scaled channels, softmax over onehot labels."""
        if self.config.layout == "zconcat" or self.config.mask_encoding == "scaled":
            return torch.tanh(raw)
        c = self.image_channels
        return torch.cat([torch.tanh(raw[:, :c]), torch.softmax(raw[:, c:].float(), dim=1).to(raw.dtype)], dim=1)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network tensor -> (image [B,C,*S] in [-1,1], mask int64 [B,*S])."""
        if self.config.layout == "zconcat":
            depth = x.shape[-1] // 2
            image, scaled = x[..., :depth], x[..., depth:]
            return image.float(), self._unscale(scaled.float().mean(dim=1))
        c = self.image_channels
        image = x[:, :c].float()
        if self.config.mask_encoding == "scaled":
            return image, self._unscale(x[:, c])
        return image, x[:, c:].argmax(dim=1)


class MaskOnlyCodec(PairCodec):
    """The network tensor of mask-only models (M-SG, diffusion ``mask_only``): the mask channels alone;
    decoded images have zero channels."""

    def __init__(self, config: PairingConfig, num_labels: int) -> None:
        super().__init__(config, image_channels=0, num_labels=num_labels)

    def encode(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().encode(image[:, :0], mask)
