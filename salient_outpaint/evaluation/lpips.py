"""LPIPS: perceptual distance between two images, and the diversity of several samples.

Both images go through an ImageNet classifier's convolutional trunk (AlexNet or VGG16, from
torchvision). At five depths the features are scaled to unit length along the channels, the
squared difference is weighted per channel by a learned 1x1 conv (the "linear layers",
calibrated on human similarity judgements), averaged over space, and the five depths summed.
Identical images are at distance 0.

Weights come from two local files: the backbone's torchvision ImageNet checkpoint
(alexnet-owt-7be5be79.pth or vgg16-397923af.pth) and the LPIPS linear layers as the lpips
package ships them (weights/v0.1/alex.pth or vgg.pth, keys "lin0.model.1.weight" ...).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from ..checkpoints.io import read_state_dict


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]  # torchvision constructor; only its `.features` trunk is kept
    feature_taps: tuple[int, ...]  # indices in `.features` of the ReLUs whose outputs are compared
    channels: tuple[int, ...]  # channels at those taps
    weights_name: str  # torchvision's ImageNet checkpoint


BACKBONES = {
    "alex": Backbone(torchvision.models.alexnet, feature_taps=(1, 4, 7, 9, 11), channels=(64, 192, 384, 256, 256),
                     weights_name="alexnet-owt-7be5be79.pth"),
    "vgg": Backbone(torchvision.models.vgg16, feature_taps=(3, 8, 15, 22, 29), channels=(64, 128, 256, 512, 512),
                    weights_name="vgg16-397923af.pth"),
}

# LPIPS v0.1 maps [-1, 1] images to the ImageNet normalisation of the backbones: (x - shift) / scale.
INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # keeps all-zero feature vectors (dead ReLUs) at length 0 instead of NaN


def linear_layer_key(layer: int) -> str:
    """Key of a linear layer's weight in the lpips package's files (a Dropout at .0, the 1x1 conv at .1)."""
    return f"lin{layer}.model.1.weight"


def unit_length_along_channels(features: torch.Tensor) -> torch.Tensor:
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


class LPIPS(nn.Module):
    """distance(images_a, images_b): (B, 3, H, W) in [-1, 1] each -> (B,). Random weights until `load_lpips`."""

    def __init__(self, backbone: str = "alex"):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown LPIPS backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        spec = BACKBONES[backbone]
        # The trunk up to the last tap: the pooling after it feeds nothing we compare.
        self.features = spec.build(weights=None).features[:spec.feature_taps[-1] + 1]
        self.feature_taps = spec.feature_taps
        self.linear_layers = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1, bias=False)
                                           for channels in spec.channels)
        self.register_buffer("input_shift", torch.tensor(INPUT_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("input_scale", torch.tensor(INPUT_SCALE)[None, :, None, None], persistent=False)
        self.requires_grad_(False)
        self.eval()

    def normalised_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> one (B, C_l, H_l, W_l) unit-length feature map per tap."""
        x = (images - self.input_shift) / self.input_scale
        tapped = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.feature_taps:
                tapped.append(unit_length_along_channels(x))
        return tapped

    def distance_between_features(self, features_a: list[torch.Tensor], features_b: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS from two images' `normalised_features`: (B,)."""
        per_layer = [linear(torch.square(a - b)).mean(dim=(1, 2, 3))  # (B,): 1 output channel, spatial mean
                     for linear, a, b in zip(self.linear_layers, features_a, features_b)]
        return torch.stack(per_layer).sum(dim=0)

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        if images_a.shape != images_b.shape:
            raise ValueError(f"LPIPS compares images of one size; got {tuple(images_a.shape)} "
                             f"and {tuple(images_b.shape)}")
        return self.distance_between_features(self.normalised_features(images_a), self.normalised_features(images_b))


def load_lpips(backbone: str, backbone_weights_path: str | Path, linear_weights_path: str | Path,
               device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS with a torchvision ImageNet checkpoint for the trunk and the lpips package's linear layers."""
    model = LPIPS(backbone)
    spec = BACKBONES[backbone]
    backbone_state = read_weights(backbone_weights_path, f"{backbone} backbone",
                                  f"torchvision's ImageNet weights {spec.weights_name}")
    trunk_state = {key.removeprefix("features."): value for key, value in backbone_state.items()
                   if key.startswith("features.") and int(key.split(".")[1]) <= spec.feature_taps[-1]}
    if not trunk_state:
        raise KeyError(f"{backbone_weights_path} has no 'features.*' keys; expected torchvision's {spec.weights_name}")
    model.features.load_state_dict(trunk_state)
    linear_state = read_weights(linear_weights_path, "LPIPS linear layers",
                                f"the lpips package's weights/v0.1/{backbone}.pth")
    expected_keys = [linear_layer_key(layer) for layer in range(len(spec.channels))]
    missing = [key for key in expected_keys if key not in linear_state]
    if missing:
        raise KeyError(f"{linear_weights_path} lacks {missing}; is it an LPIPS linear-layer file for the "
                       f"{backbone} backbone? Its keys are {sorted(linear_state)}")
    model.linear_layers.load_state_dict({f"{layer}.weight": linear_state[key]
                                         for layer, key in enumerate(expected_keys)})
    return model.to(device)


def read_weights(path: str | Path, what: str, expected_file: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} weights at {path}; pass the path of {expected_file}")
    return read_state_dict(path)  # mapped to the CPU: the lpips package saved its files from a GPU


@torch.no_grad()
def pairwise_diversity(model: LPIPS, samples: torch.Tensor) -> float:
    """Mean LPIPS over all pairs of K samples generated for one input ((K, 3, H, W), K >= 2): higher is more diverse."""
    if samples.dim() != 4 or samples.shape[0] < 2:
        raise ValueError(f"pairwise diversity needs (K, 3, H, W) samples with K >= 2, got shape {tuple(samples.shape)}")
    features = model.normalised_features(samples)  # each sample through the trunk once
    first, second = torch.triu_indices(len(samples), len(samples), offset=1)  # every pair i < j
    distances = model.distance_between_features([f[first] for f in features], [f[second] for f in features])
    return float(distances.mean())
