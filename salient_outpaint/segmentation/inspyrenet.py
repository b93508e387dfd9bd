"""InSPyReNet (Kim et al. 2022), the salient-object detector of the authors' notebook, through the
`transparent-background` package (`Remover(mode='base')`, `process(image, type='map')`).

It needs no prompt: it finds the most salient object by itself, as a soft map (evaluation's prompt
mask, the object before generation, is not used: the authors measured expansion this way). We build the
package's network and load the weights from a local file only; its Remover would download them
(and write to ~/.transparent-background), which a run must never do. The preprocessing is Remover's
for an image: resize to `size` x `size` (1024 for 'base') bilinearly, ImageNet-normalise, and the
map is resized back bilinearly (corners aligned).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..checkpoints.io import CheckpointError, read_state_dict
from ..data.images import to_uint8
from .interface import SegmentPrompt, SegmenterError, check_image, check_prompt

CHECKPOINT_NAME = "ckpt_base.pth"
RELEASES = "https://github.com/plemeri/transparent-background/releases (1.2.12)"
BASE_SIZE = 1024  # the 'base' mode's input side
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ALTERNATIVES = "or give the object mask yourself with --mask, or use --segmenter sam with --point/--box"


def build_network(size: int = BASE_SIZE) -> torch.nn.Module:
    """The package's InSPyReNet (Swin-B backbone, depth 64), untrained: the shape its checkpoints fill."""
    try:
        with warnings.catch_warnings():  # the package announces its optional GUI on import
            warnings.simplefilter("ignore")
            from transparent_background.InSPyReNet import InSPyReNet_SwinB
    except ImportError as error:
        raise SegmenterError("the InSPyReNet segmenter needs the transparent-background package: "
                             f"pip install -e '.[mask]'; {ALTERNATIVES}") from error
    return InSPyReNet_SwinB(depth=64, pretrained=False, base_size=[size, size], threshold=None)


class InSPyReNetSegmenter:
    def __init__(self, network: torch.nn.Module, size: int = BASE_SIZE):
        self.network, self.size = network.eval(), size

    @classmethod
    def from_file(cls, weights: str | Path | None, size: int = BASE_SIZE,
                  device: str | torch.device = "cpu") -> InSPyReNetSegmenter:
        if weights is None or not Path(weights).is_file():
            where = f"no InSPyReNet weights at {weights}" if weights else "InSPyReNet needs its weights"
            raise SegmenterError(f"{where}: download {CHECKPOINT_NAME} from {RELEASES} and pass its path with "
                                 f"--mask-weights; {ALTERNATIVES}")
        network = build_network(size)  # first: a missing package is the first thing to fix
        try:
            state_dict = read_state_dict(weights)
        except CheckpointError as error:  # unreadable, or a pickle that would run code: one line already
            raise SegmenterError(f"cannot load {weights} as InSPyReNet: {error}") from None
        try:
            network.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise SegmenterError(f"{weights} does not hold InSPyReNet weights ({CHECKPOINT_NAME} from "
                                 f"{RELEASES}): {str(error).splitlines()[0]}") from error
        return cls(network.to(device), size)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, prompt: SegmentPrompt | None = None) -> torch.Tensor:
        check_image(image)
        if not check_prompt(prompt, image).is_empty() and prompt.mask is None:
            raise SegmenterError("InSPyReNet finds the salient object by itself and takes no points or box; "
                                 "use --segmenter sam to point at an object")
        height, width = image.shape[-2:]
        pixels = Image.fromarray(to_uint8(image).permute(1, 2, 0).cpu().numpy())
        resized = np.asarray(pixels.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255
        normalised = (resized - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
        device = next(self.network.parameters()).device
        network_input = torch.from_numpy(normalised).permute(2, 0, 1)[None].to(device)  # (1, 3, size, size)
        saliency = self.network(network_input)  # (1, 1, size, size) in [0, 1]
        saliency = F.interpolate(saliency, (height, width), mode="bilinear", align_corners=True)
        return saliency[0].clamp(0, 1).to(image.device)  # (1, H, W)
