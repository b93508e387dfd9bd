"""The Inception-v3 that FID is defined on: TensorFlow's 2015-12-05 graph, as pytorch-fid ports it.

FID numbers are only comparable when computed with the same network, and the network of the
original TensorFlow FID code is not torchvision's Inception-v3. It differs in four ways:

  * weights: `pt_inception-2015-12-05-6726825d.pth`, released by pytorch-fid, with a
    1008-way classifier (unused here, but part of the file);
  * the pooling branch of the 35x35, 17x17 and first 8x8 blocks (Mixed_5b-d, 6b-e, 7b) averages
    only over pixels inside the image: TF's "SAME" average pooling leaves the zero padding out
    of the count, torchvision's counts it;
  * the pooling branch of the last block (Mixed_7c) takes the *maximum*, not the average;
  * input: images resized bilinearly to 299x299 and scaled to [-1, 1].

The features are the 2048-d global average pool after Mixed_7c ("pool3").
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from ..checkpoints.io import read_state_dict

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_INPUT_SIZE = 299
FID_FEATURE_DIM = 2048
FID_NUM_CLASSES = 1008  # the 2015 graph's classifier: ImageNet's 1000 classes plus 8 unused


def average_pool_inside_image(x: torch.Tensor) -> torch.Tensor:
    """3x3 average, stride 1, same size; border windows average over their in-image pixels only."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool_same_size(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class PoolBranchAsInTensorFlow:
    """Mixin for torchvision's Inception blocks A, C and E: redo their pooling branch with `pool_branch_input`.

    torchvision's `_forward` returns the branch outputs with the pooling branch last. We keep the
    other branches (and every parameter name, so the weight file loads as is) and recompute that
    one branch: a 3x3 pool and a 1x1 conv, a small cost next to the block.
    """

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch_outputs = super()._forward(x)
        branch_outputs[-1] = self.branch_pool(self.pool_branch_input(x))
        return branch_outputs


class FIDInceptionA(PoolBranchAsInTensorFlow, InceptionA):
    pool_branch_input = staticmethod(average_pool_inside_image)


class FIDInceptionC(PoolBranchAsInTensorFlow, InceptionC):
    pool_branch_input = staticmethod(average_pool_inside_image)


class FIDInceptionE(PoolBranchAsInTensorFlow, InceptionE):
    pool_branch_input = staticmethod(average_pool_inside_image)


class FIDInceptionELast(PoolBranchAsInTensorFlow, InceptionE):
    pool_branch_input = staticmethod(max_pool_same_size)


class FIDInceptionV3(Inception3):
    """images (B, 3, H, W) in [-1, 1] -> (B, 2048) pool3 features. Random weights until `load_fid_inception`."""

    def __init__(self):
        # init_weights=False: the weights come from the file; torchvision's truncated-normal init is only slow.
        super().__init__(num_classes=FID_NUM_CLASSES, aux_logits=False, init_weights=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE(1280)
        self.Mixed_7c = FIDInceptionELast(2048)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        for layer in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.maxpool1,  # (B, 64, 73, 73)
                      self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.maxpool2,  # (B, 192, 35, 35)
                      self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,  # (B, 288, 35, 35)
                      self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,  # (B, 768, 17, 17)
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):  # (B, 2048, 8, 8)
            x = layer(x)
        return x.mean(dim=(2, 3))  # (B, 2048)


def load_fid_inception(weights_path: str | Path, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """The FID Inception with the weights of pytorch-fid's released file."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"no FID Inception weights at {weights_path}; download {FID_WEIGHTS_NAME} "
                                "from the pytorch-fid GitHub releases (fid_weights) and pass its path")
    network = FIDInceptionV3()
    network.load_state_dict(read_state_dict(weights_path))
    return network.to(device).eval()
