"""The toy world: coloured shapes in front of procedurally drawn backgrounds.

Every scene is a pure function of (seed, split, epoch, index), so the world is as large as training
needs, the same on every process and after a resume, and its held-out split never overlaps the
training one. A scene is an image (3, H, W) in [-1, 1], the object's mask (1, H, W) and a caption
naming both: "a red striped star in front of a brick wall".

The object colours are kept away from the background colours so that a simple colour segmenter
(segmentation/colour.py) finds the object's extent in a generated image, and the background can
be recognised from its colour statistics (`classify_background`).
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from ..seeds import TOY_SCENE, stream_generator
from .masks import binarize

# name -> the phrase captions use
BACKGROUNDS = {
    "sky": "a blue sky",
    "grass": "green grass",
    "water": "blue water",
    "stripes": "a striped wall",
    "brick": "a brick wall",
    "room": "a room",
    "sand": "sand",
    "night": "a night sky",
}
COLOURS = {  # RGB in [0, 1]
    "red": (0.95, 0.1, 0.1),
    "yellow": (1.0, 0.9, 0.1),
    "purple": (0.55, 0.15, 0.85),
    "orange": (1.0, 0.5, 0.0),
    "magenta": (1.0, 0.2, 0.75),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
TEXTURES = ("plain", "striped")
SPLIT_OFFSETS = {"train": 0, "test": 1_000_003}  # far apart: the test scenes are never trained on
WINDOW_TRIES = 4  # a zoomed item's window is drawn again while more than half of it is object
GRAIN = 64  # the random textures' grains along a side: a pixel each at the working size (64 px)


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def choose(generator: torch.Generator, options):
    return options[int(torch.randint(len(options), (), generator=generator))]


def grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) row and column coordinates in [0, 1], pixel centres."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return coords[:, None].expand(size, size), coords[None, :].expand(size, size)


def fill(colour, size: int) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32)[:, None, None].expand(3, size, size).clone()


def blend(image: torch.Tensor, where: torch.Tensor, colour) -> torch.Tensor:
    return torch.where(where[None], torch.tensor(colour, dtype=torch.float32)[:, None, None], image)


def random_grains(size: int, generator: torch.Generator, dims: int = 2) -> torch.Tensor:
    """Uniform [0, 1) values, one per grain (GRAIN along a side, or one per pixel if `size` is smaller),
    spread over `size` pixels along each of `dims` sides: each grain covers its block of pixels, so drawing at
    4x shows the same grains, each 4x4 pixels."""
    cells = min(size, GRAIN)
    values = torch.rand((cells,) * dims, generator=generator)
    index = torch.arange(size) * cells // size
    return values[index][:, index] if dims == 2 else values[index]


def draw_background(name: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """(3, H, W) in [0, 1]. The random textures (grass, brick, sand, stars) have a fixed grain, 1/GRAIN of the
    scene's side: at the working size a pixel each, drawn larger a block each, so a scene drawn at 4x is the
    same scene seen sharper (its area average is the working-size drawing), not finer noise."""
    rows, cols = grid(size)
    noise = random_grains(size, generator) - 0.5
    if name == "sky":
        top, bottom = torch.tensor([0.15, 0.35, 0.85]), torch.tensor([0.55, 0.75, 1.0])
        image = top[:, None, None] + (bottom - top)[:, None, None] * rows[None]
        for _ in range(int(torch.randint(1, 4, (), generator=generator))):  # clouds
            cy, cx = uniform(generator, 0.05, 0.6), uniform(generator, 0, 1)
            ry, rx = uniform(generator, 0.04, 0.08), uniform(generator, 0.1, 0.2)
            image = blend(image, ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1, (0.95, 0.97, 1.0))
        return image
    if name == "grass":
        image = fill((0.2, 0.55, 0.15), size) + 0.15 * noise[None] * torch.tensor([0.5, 1.0, 0.4])[:, None, None]
        blades = random_grains(size, generator, dims=1)[None, :].expand(size, size) < 0.25
        return blend(image, blades & (noise > 0), (0.1, 0.4, 0.08))
    if name == "water":
        phase = uniform(generator, 0, 2 * math.pi)
        waves = torch.sin(2 * math.pi * (6 * rows + 0.8 * torch.sin(2 * math.pi * 2 * cols + phase)))
        image = fill((0.05, 0.35, 0.6), size) + 0.12 * waves[None] * torch.tensor([0.3, 0.8, 1.0])[:, None, None]
        return image
    if name == "stripes":
        period = uniform(generator, 0.12, 0.2)
        light = ((cols / period + uniform(generator, 0, 1)) % 1.0) < 0.5
        return torch.where(light[None], fill((0.95, 0.95, 0.85), size), fill((0.25, 0.6, 0.55), size))
    if name == "brick":
        brick_height, brick_width = 0.125, 0.25
        course = torch.floor(rows / brick_height)
        shifted = cols + (course % 2) * brick_width / 2
        mortar = ((rows % brick_height) < 0.025) | ((shifted % brick_width) < 0.025)
        image = fill((0.6, 0.25, 0.18), size) + 0.08 * noise[None]
        return blend(image, mortar, (0.75, 0.72, 0.68))
    if name == "room":
        horizon = uniform(generator, 0.55, 0.7)
        wall = fill((0.85, 0.78, 0.62), size)
        planks = torch.sin(2 * math.pi * rows * 14) > 0.8
        floor = blend(fill((0.45, 0.28, 0.12), size), planks, (0.35, 0.2, 0.08))
        return torch.where((rows >= horizon)[None], floor, wall)
    if name == "sand":
        return fill((0.86, 0.75, 0.5), size) + 0.12 * noise[None]
    if name == "night":
        image = fill((0.03, 0.04, 0.15), size)
        return blend(image, random_grains(size, generator) < 0.02, (1.0, 1.0, 0.9))
    raise ValueError(f"unknown background {name!r}")


def shape_mask(shape: str, size: int, centre: tuple[float, float], radius: float, angle: float) -> torch.Tensor:
    """(H, W) bool: the shape, `radius` = its half-extent as a fraction of the image side."""
    rows, cols = grid(size)
    dy, dx = (rows - centre[0]) / radius, (cols - centre[1]) / radius
    y = dy * math.cos(angle) - dx * math.sin(angle)
    x = dy * math.sin(angle) + dx * math.cos(angle)
    if shape == "circle":
        return x ** 2 + y ** 2 <= 1
    if shape == "square":
        return torch.maximum(x.abs(), y.abs()) <= 0.8
    if shape == "diamond":
        return x.abs() + y.abs() <= 1
    if shape == "cross":
        return ((x.abs() <= 0.33) & (y.abs() <= 1)) | ((y.abs() <= 0.33) & (x.abs() <= 1))
    polar_angle, polar_radius = torch.atan2(y, x), torch.sqrt(x ** 2 + y ** 2)
    if shape == "triangle":  # the boundary r(theta) of a regular triangle with circumradius 1
        sector = (polar_angle + math.pi / 2) % (2 * math.pi / 3) - math.pi / 3
        return polar_radius * torch.cos(sector) <= 0.5
    if shape == "star":  # five points, inner radius 0.45
        sector = (polar_angle + math.pi / 2) % (2 * math.pi / 5) - math.pi / 5
        edge = 0.45 + 0.55 * (1 - sector.abs() / (math.pi / 5)) ** 2
        return polar_radius <= edge
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(size: int, generator: torch.Generator) -> dict:
    """One scene: image (3, H, W) in [-1, 1], mask (1, H, W) in {0, 1}, caption and its parts."""
    background = choose(generator, list(BACKGROUNDS))
    colour, shape, texture = choose(generator, list(COLOURS)), choose(generator, SHAPES), choose(generator, TEXTURES)
    radius = uniform(generator, 0.16, 0.3)
    centre = (uniform(generator, radius, 1 - radius), uniform(generator, radius, 1 - radius))
    object_mask = shape_mask(shape, size, centre, radius, uniform(generator, 0, 2 * math.pi))
    image = draw_background(background, size, generator).clamp(0, 1)
    paint = fill(COLOURS[colour], size)
    if texture == "striped":
        rows, cols = grid(size)
        stripes = ((rows + cols) / (radius * 0.5)) % 1.0 < 0.35
        paint = torch.where(stripes[None], paint * 0.55, paint)
    image = torch.where(object_mask[None], paint, image)
    described = f"{colour} {texture} {shape}" if texture != "plain" else f"{colour} {shape}"
    return {"image": image * 2 - 1, "mask": object_mask[None].float(),
            "caption": f"{'an' if described[0] in 'aeiou' else 'a'} {described} in front of {BACKGROUNDS[background]}",
            "background": background, "colour": colour, "shape": shape, "texture": texture}


def scene_generator(seed: int, split: str, epoch: int, index: int) -> torch.Generator:
    return stream_generator(TOY_SCENE, seed, SPLIT_OFFSETS[split], epoch, index)


class ToyWorldDataset(Dataset):
    """`num_items` scenes per epoch; with `fresh_every_epoch` each epoch draws new ones (training),
    otherwise the same (a fixed held-out set). With `zooms` (e.g. (2, 4)), scene i is drawn at
    size x zooms[i % len(zooms)] and a random size x size window of it is the item: what the networks
    see of a large photo in --hires's tiles (hires.py), part of an object or none of it. A window is drawn
    again (up to WINDOW_TRIES times) while more than half of it is object: hires.py keeps the photo's object
    wherever a tile has it, and a toy model trained on such windows learnt to fill whole scenes with the
    object's colour."""

    def __init__(self, num_items: int, size: int = 64, seed: int = 0, split: str = "train",
                 fresh_every_epoch: bool | None = None, zooms: tuple[int, ...] = (1,)):
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {', '.join(SPLIT_OFFSETS)}, not {split!r}")
        self.num_items, self.size, self.seed, self.split, self.zooms = num_items, size, seed, split, zooms
        self.fresh_every_epoch = split == "train" if fresh_every_epoch is None else fresh_every_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_items:
            raise IndexError(index)
        epoch = self.epoch if self.fresh_every_epoch else 0
        generator = scene_generator(self.seed, self.split, epoch, index)
        zoom = self.zooms[index % len(self.zooms)]
        scene = render_scene(self.size * zoom, generator)
        if zoom == 1:
            return scene
        for _ in range(WINDOW_TRIES):
            top, left = (int(torch.randint(self.size * (zoom - 1) + 1, (), generator=generator)) for _ in range(2))
            window = (..., slice(top, top + self.size), slice(left, left + self.size))
            if scene["mask"][window].mean() <= 0.5:
                break
        return {**scene, "image": scene["image"][window], "mask": scene["mask"][window]}


def background_signatures(size: int = 64, samples: int = 8) -> dict[str, torch.Tensor]:
    """Each background's mean colour and colour spread, averaged over a few renderings: (6,)."""
    signatures = {}
    for index, name in enumerate(BACKGROUNDS):
        generator = torch.Generator().manual_seed(index)
        features = [colour_features(draw_background(name, size, generator).clamp(0, 1) * 2 - 1,
                                    torch.ones(size, size, dtype=torch.bool)) for _ in range(samples)]
        signatures[name] = torch.stack(features).mean(0)
    return signatures


def colour_features(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(3, H, W) image, (H, W) bool region -> (6,) mean and standard deviation of its colour."""
    pixels = image[:, region]
    return torch.cat([pixels.mean(dim=1), pixels.std(dim=1)])


def classify_background(image: torch.Tensor, object_mask: torch.Tensor,
                        signatures: dict[str, torch.Tensor]) -> str:
    """The toy world's stand-in for CLIP score: which background does the painted region look like?
    Nearest background signature (mean, spread of colour) over the pixels outside the object."""
    outside = binarize(object_mask.reshape(image.shape[-2:])) == 0
    features = colour_features(image, outside)
    return min(signatures, key=lambda name: float((features - signatures[name]).norm()))
