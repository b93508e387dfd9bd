"""Segment Anything (Kirillov et al. 2023), prompted: the paper's segmenter for object expansion, and the
one for objects a salient-object detector misses (`--point X,Y`, `--box X0,Y0,X1,Y1`).

SAM answers a prompt with three candidate masks (part, whole, group) and a score for each; we keep
the best scored, as the sigmoid of its logits: a soft map whose 0.5 contour is SAM's own mask.
A prompt mask (evaluation: the object before generation) becomes `points_per_mask` foreground
points sampled in its core, where SAM cannot be unsure which side of an edge is meant.
Needs `pip install segment-anything` (the [sam] extra) and a released checkpoint file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..checkpoints.io import CheckpointError, read_state_dict
from ..data.images import to_uint8
from ..data.masks import binarize, sample_points_in_mask
from .interface import SegmentPrompt, SegmenterError, check_image, check_prompt

SAM_CHECKPOINT_NAMES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth",
                        "vit_h": "sam_vit_h_4b8939.pth"}
SAM_MODEL_TYPES = tuple(SAM_CHECKPOINT_NAMES)
SAM_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}  # the image encoder's width names the model
RELEASES = "https://github.com/facebookresearch/segment-anything#model-checkpoints"


class SAMSegmenter:
    def __init__(self, sam: torch.nn.Module, points_per_mask: int = 3, seed: int = 0):
        from segment_anything import SamPredictor  # the caller already has a SAM, so the package is there

        self.predictor = SamPredictor(sam.eval())
        self.points_per_mask = points_per_mask
        self.generator = torch.Generator().manual_seed(seed)  # points are reproducible run to run

    @classmethod
    def from_checkpoint(cls, checkpoint_path: str | Path | None, model_type: str | None = None,
                        points_per_mask: int = 3, seed: int = 0, device: str | torch.device = "cpu") -> SAMSegmenter:
        return cls(load_sam(checkpoint_path, model_type, device), points_per_mask, seed)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, prompt: SegmentPrompt | None = None) -> torch.Tensor:
        check_image(image)
        prompt = check_prompt(prompt, image)
        if prompt.is_empty():
            raise SegmenterError("SAM segments the object it is pointed at: give a point on it (--point X,Y) or a "
                                 "box around it (--box X0,Y0,X1,Y1), or use --segmenter inspyrenet")
        points = torch.tensor(prompt.points, dtype=torch.float32).reshape(-1, 2)  # (P, 2) as (x, y)
        if prompt.mask is not None:
            sampled = sample_points_in_mask(binarize(prompt.mask[0].cpu()).bool(), self.points_per_mask, self.generator)
            points = torch.cat([points, sampled.float()])
        self.predictor.set_image(to_uint8(image).permute(1, 2, 0).cpu().numpy(), image_format="RGB")  # (H, W, 3)
        logits, scores, _ = self.predictor.predict(
            point_coords=points.numpy() if len(points) else None,
            point_labels=np.ones(len(points), dtype=np.int64) if len(points) else None,
            box=np.array(prompt.box, dtype=np.float32) if prompt.box is not None else None,
            multimask_output=True, return_logits=True)  # (3, H, W), (3,)
        return torch.from_numpy(logits[scores.argmax()]).float().sigmoid()[None].to(image.device)


def load_sam(checkpoint_path: str | Path | None, model_type: str | None = None,
             device: str | torch.device = "cpu") -> torch.nn.Module:
    """A SAM with the weights of a released checkpoint file; its model type read from the weights unless given."""
    try:
        from segment_anything import sam_model_registry
    except ImportError as error:
        raise SegmenterError("the SAM segmenter needs the segment-anything package: pip install -e '.[sam]' "
                             "(or give the object mask yourself with --mask)") from error
    if model_type is not None and model_type not in SAM_MODEL_TYPES:
        raise SegmenterError(f"unknown SAM model type {model_type!r}; choose one of {', '.join(SAM_MODEL_TYPES)}")
    names = SAM_CHECKPOINT_NAMES[model_type] if model_type else " or ".join(SAM_CHECKPOINT_NAMES.values())
    if checkpoint_path is None or not Path(checkpoint_path).is_file():
        where = f"no SAM checkpoint at {checkpoint_path}" if checkpoint_path else "SAM needs its weights"
        raise SegmenterError(f"{where}: download {names} from {RELEASES} and pass its path with --mask-weights "
                             "(or give the object mask yourself with --mask)")
    try:
        weights = read_state_dict(checkpoint_path)
    except CheckpointError as error:  # unreadable, or a pickle that would run code: one line already
        raise SegmenterError(f"cannot load {checkpoint_path} as SAM: {error}") from None
    patch_embedding = weights.get("image_encoder.patch_embed.proj.weight")
    if patch_embedding is None or patch_embedding.shape[0] not in SAM_WIDTHS:
        raise SegmenterError(f"{checkpoint_path} is not a segment-anything checkpoint (expected {names} "
                             f"from {RELEASES})")
    model_type = model_type or SAM_WIDTHS[patch_embedding.shape[0]]
    sam = sam_model_registry[model_type](checkpoint=None)
    sam.load_state_dict(weights)
    return sam.to(device)
