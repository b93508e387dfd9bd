"""Finding the salient object again in a generated image, for the object-expansion metric.

A segmenter gets the generated image and the *original* object mask, and returns the mask of
the object as it appears now. If the model grew the object (an extra table leg, a longer
tail), the returned mask covers the growth too.

  SAMSegmenter     the paper's choice: Segment Anything prompted with points inside the
                   original mask; needs `pip install segment-anything` and a SAM checkpoint
  ColourSegmenter  for the synthetic toy world, whose objects are regions of one colour
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints.io import read_state_dict
from ..data.images import to_uint8
from .expansion import check_mask, sample_points_in_mask

SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
SAM_CHECKPOINT_NAMES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth",
                        "vit_h": "sam_vit_h_4b8939.pth"}


class Segmenter(ABC):
    @abstractmethod
    def segment(self, image: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        """image (3, H, W) float in [-1, 1], object_mask (H, W) bool -> (H, W) bool mask of the object in image."""


def check_image_and_mask(image: torch.Tensor, object_mask: torch.Tensor) -> None:
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"image must be a (3, H, W) float tensor in [-1, 1], got dtype {image.dtype} "
                         f"and shape {tuple(image.shape)}")
    check_mask(object_mask, "object_mask")
    if image.shape[1:] != object_mask.shape:
        raise ValueError(f"image is {tuple(image.shape[1:])} but object_mask is {tuple(object_mask.shape)}; "
                         "they must cover the same pixels")
    if not object_mask.any():
        raise ValueError("object_mask is empty: there is no object to look for")


class SAMSegmenter(Segmenter):
    """Segment Anything, prompted with `points_per_mask` foreground points sampled in the original mask's core.

    SAM answers a point prompt with three candidate masks (part, whole, group); we keep the one
    it scores highest. Build from a checkpoint with `SAMSegmenter.from_checkpoint`.
    """

    def __init__(self, sam: torch.nn.Module, points_per_mask: int = 3, seed: int = 0):
        from segment_anything import SamPredictor  # the caller already has a SAM, so the package is there

        self.predictor = SamPredictor(sam.eval())
        self.points_per_mask = points_per_mask
        self.generator = torch.Generator().manual_seed(seed)  # points are reproducible run to run

    @classmethod
    def from_checkpoint(cls, checkpoint_path: str | Path, model_type: str = "vit_b", points_per_mask: int = 3,
                        seed: int = 0, device: str | torch.device = "cpu") -> SAMSegmenter:
        return cls(load_sam(checkpoint_path, model_type, device), points_per_mask, seed)

    @torch.no_grad()
    def segment(self, image: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        check_image_and_mask(image, object_mask)
        self.predictor.set_image(to_uint8(image).permute(1, 2, 0).cpu().numpy(), image_format="RGB")  # (H, W, 3)
        points_xy = sample_points_in_mask(object_mask.cpu(), self.points_per_mask, self.generator)
        candidate_masks, scores, _ = self.predictor.predict(point_coords=points_xy.numpy(),
                                                            point_labels=np.ones(len(points_xy), dtype=np.int64),
                                                            multimask_output=True)  # (3, H, W), (3,)
        return torch.from_numpy(candidate_masks[scores.argmax()]).to(object_mask.device)


def load_sam(checkpoint_path: str | Path, model_type: str = "vit_b", device: str | torch.device = "cpu"):
    """A SAM model of `model_type` with the weights of a released checkpoint file."""
    try:
        from segment_anything import sam_model_registry
    except ImportError as error:
        raise ImportError("SAMSegmenter needs the segment-anything package: pip install segment-anything "
                          "(or pip install -e .[sam])") from error
    if model_type not in SAM_MODEL_TYPES:
        raise ValueError(f"unknown SAM model type {model_type!r}; choose one of {SAM_MODEL_TYPES}")
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"no SAM checkpoint at {checkpoint_path}; download {SAM_CHECKPOINT_NAMES[model_type]} "
                                f"from the segment-anything release page and pass its path")
    sam = sam_model_registry[model_type](checkpoint=None)
    sam.load_state_dict(read_state_dict(checkpoint_path))
    return sam.to(device)


class ColourSegmenter(Segmenter):
    """The toy world's segmenter: the object is the colour region it is painted in.

    The object's colour is the median colour inside the original mask (the generator keeps the
    object's own pixels, so this is the original colour). Pixels within `tolerance` of it
    (Euclidean distance in [-1, 1] RGB) are candidates; the object is every candidate region
    that touches the original mask, so a same-coloured thing elsewhere in the background is
    not counted as growth.
    """

    def __init__(self, tolerance: float = 0.25):
        self.tolerance = tolerance

    @torch.no_grad()
    def segment(self, image: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
        check_image_and_mask(image, object_mask)
        object_colour = image[:, object_mask].median(dim=1).values  # (3,)
        close_in_colour = (image - object_colour[:, None, None]).norm(dim=0) <= self.tolerance  # (H, W)
        return regions_touching(close_in_colour & object_mask, close_in_colour)


def regions_touching(seeds: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: the 8-connected regions of `allowed` that contain a seed pixel.

    A flood fill by repeated 3x3 dilation, each step kept inside `allowed`, until nothing changes.
    """
    region = (seeds & allowed).float()[None, None]  # (1, 1, H, W)
    allowed = allowed.float()[None, None]
    while True:
        grown = F.max_pool2d(region, kernel_size=3, stride=1, padding=1) * allowed
        if torch.equal(grown, region):
            return region[0, 0].bool()
        region = grown
