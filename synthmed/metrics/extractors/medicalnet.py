"""MedicalNet 3D ResNet-10 features (Chen et al., 2019), the 3D-FID convention of HA-GAN and WDM.

The backbone is MONAI's ResNet with MedicalNet's settings (shortcut type B, no bias in the
downsampling convolutions); features are the global average pool of the last stage (512-d). Each
volume is z-scored first, as MedicalNet normalised its training data.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import resnet10

from synthmed.metrics.extractors.base import FeatureExtractor, WeightsUnavailable, register_feature_extractor
from synthmed.metrics.extractors.weights import WeightsSpec, fetch_weights

# Tencent publishes no hash: the first download's sha256 is recorded and checked afterwards (see WeightsSpec).
MEDICALNET_WEIGHTS = WeightsSpec(
    file_name="resnet_10_23dataset.pth",
    url="https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet10/resolve/main/resnet_10_23dataset.pth",
    sha256="",
)


def build_medicalnet_backbone() -> torch.nn.Module:
    return resnet10(spatial_dims=3, n_input_channels=1, shortcut_type="B", bias_downsample=False, feed_forward=False)


def load_medicalnet_state(net: torch.nn.Module, path) -> None:
    """Load a MedicalNet checkpoint (``{"state_dict": {"module.conv1.weight": ...}}``) into `net`.

    Raises:
        WeightsUnavailable: the file does not hold the backbone's tensors.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith(("fc.", "conv_seg"))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsUnavailable(f"{path}: not a MedicalNet ResNet-10 checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})")


class MedicalNetExtractor(FeatureExtractor):
    """512-d features of MedicalNet ResNet-10 (3D)."""

    name = "medicalnet"
    spatial_dims = 3
    uses_device = True

    def __init__(self, pretrained: bool = True, download: bool = True, device: str = "cpu"):
        self.pretrained = pretrained  # False: random weights, only for timing and shape tests
        self.device = torch.device(device)
        self.net = build_medicalnet_backbone().eval().requires_grad_(False)
        if pretrained:
            load_medicalnet_state(self.net, fetch_weights(MEDICALNET_WEIGHTS, download=download))
        self.net.to(self.device)

    def extract(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(images[:, :1], np.float32)).to(self.device)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        std = x.std(dim=(2, 3, 4), keepdim=True).clamp_min(1e-6)
        with torch.inference_mode():
            return self.net((x - mean) / std).cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "weights": MEDICALNET_WEIGHTS.file_name if self.pretrained else "random"}


register_feature_extractor(MedicalNetExtractor.name, MedicalNetExtractor)
