"""What the web app and its HTTP API do, without the web: the models, loaded once, turn an upload
into its object mask, and a mask + prompt into new backgrounds at the photo's full size (with SI2
alone beside them on the same noise when asked). Every refusal is an InputError whose message is
shown to the person."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .. import heap
from ..composite import composite, edge_weight
from ..data.images import to_uint8
from ..data.masks import binarize
from ..hires import HiresOptions
from ..inputs import InputError
from ..modules.models import Models
from ..options import SamplingOptions
from ..photo import paint
from ..pipeline import OutpaintPipeline, check_object_mask
from ..segmentation import SegmentPrompt, SegmenterError, make_segmenter
from .memory import check_request_memory, default_max_memory
from .uploads import DEFAULT_MAX_PIXELS, read_mask, read_photo

MAX_IMAGES = 8  # per request: a queue serves one request at a time, so one request must not hold it for long
MAX_STEPS = 150
NO_OBJECT = ("no object: the mask is empty. Upload a photo with transparency or a plain backdrop, or the "
             "object's mask (white = object), or paint the object in the mask editor")
FINDS_OBJECTS_ALONE = ("inspyrenet", "colour")  # the segmenters that need no prompt
TAKES_POINTS = ("sam", "colour")  # the segmenters a click on the object can prompt


class OutpaintService:
    def __init__(self, models: Models, device: torch.device | str = "cpu", max_pixels: int = DEFAULT_MAX_PIXELS,
                 segmenter: str | None = None, mask_weights: str | Path | None = None,
                 hires: HiresOptions | None = None, max_memory: int | None = None):
        """`segmenter` (a name of salient_outpaint.segmentation, with its `mask_weights`) finds the object
        of a photo that brings no mask of its own; None: the person uploads or paints the mask. `hires`: every
        result painted again toward the photo's size (app.py --hires). A request whose estimate (memory.py)
        is over `max_memory` bytes (default: 80% of the machine's) is refused."""
        if models.controlnet is None:
            raise ValueError("the app needs a ControlNet (it compares against SI2 alone by setting its scale to 0)")
        self.pipeline = OutpaintPipeline(models, device)
        self.max_pixels = max_pixels
        self.hires = hires
        self.max_memory = max_memory or default_max_memory()
        self.segmenter_name = segmenter
        self.segmenter = make_segmenter(segmenter, mask_weights, device) if segmenter else None

    @property
    def takes_points(self) -> bool:
        return self.segmenter_name in TAKES_POINTS

    def read(self, photo: str | Path, mask: str | Path | None = None,
             points: list[tuple[float, float]] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Uploaded files -> image (3, H, W) in [-1, 1] and object mask (1, H, W) in [0, 1], may be soft:
        the segmenter's answer to `points` (x, y) on the object if any, else the uploaded mask, else the
        photo's own (alpha, or the object on a plain backdrop), else what the segmenter finds alone, else
        all zeros (nothing found: the person paints the object in the page's editor)."""
        image, own_mask = read_photo(photo, self.max_pixels)
        if points:
            if not self.takes_points:
                raise InputError(f"points on the object need a segmenter that takes them; start the app with "
                                 f"--segmenter {' or '.join(TAKES_POINTS)}")
            return image, self.segment(image, SegmentPrompt(points=tuple(points)))
        if mask is not None:
            return image, read_mask(mask, image, self.max_pixels)
        if own_mask is not None:
            return image, own_mask
        if self.segmenter_name in FINDS_OBJECTS_ALONE:
            return image, self.segment(image, None)
        return image, torch.zeros(1, *image.shape[-2:])

    def segment(self, image: torch.Tensor, prompt: SegmentPrompt | None) -> torch.Tensor:
        try:
            return self.segmenter(image, prompt)
        except SegmenterError as error:
            raise InputError(str(error)) from None

    def generate(self, image: torch.Tensor, mask: torch.Tensor, prompt: str, negative_prompt: str,
                 options: SamplingOptions, seed: int, num_images: int,
                 compare: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (num_images, 3, H, W) uint8 at the photo's size with the ControlNet, and the same with SI2
        alone (control scale 0, same seed, so the same initial noise) when `compare`, else None. Each image
        is taken to full size and to 8 bits on its own, so that a large photo's request stays bounded."""
        check_request(options, seed, num_images)
        check_request_memory(*image.shape[-2:], num_images, compare, self.max_memory)
        if not binarize(mask).any():
            raise InputError(NO_OBJECT)
        check_object_mask(mask, image)  # a mask covering everything is refused before any model runs

        def sample(control_scale: float) -> torch.Tensor:
            generator = torch.Generator().manual_seed(seed)
            generated, painted_mask = paint(self.pipeline, image, mask, prompt, negative_prompt, num_images,
                                            dataclasses.replace(options, control_scale=control_scale), generator,
                                            progress=True, hires=self.hires)  # (N, 3, h, w)
            return torch.stack([to_uint8(composite(one[None], painted_mask, image, mask, options.feather, weight)[0])
                                for one in generated])

        weight = edge_weight(mask, options.feather)  # the photo's, once for every picture of the request
        try:
            images = sample(options.control_scale)
            return images, sample(0.0) if compare else None
        finally:
            heap.trim()  # a server would otherwise keep its largest request's peak for good


def check_request(options: SamplingOptions, seed: int, num_images: int) -> None:
    """What this server serves, beyond what SamplingOptions allows: few images and steps per request."""
    if not 1 <= num_images <= MAX_IMAGES:
        raise InputError(f"number of images must be between 1 and {MAX_IMAGES}, not {num_images}")
    if options.steps > MAX_STEPS:  # SamplingOptions refused fewer than 1
        raise InputError(f"steps must be between 1 and {MAX_STEPS}, not {options.steps}")
    if not 0 <= seed < 2 ** 63:
        raise InputError(f"the seed must be between 0 and 2^63 - 1, not {seed}")
