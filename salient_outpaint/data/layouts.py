"""Where a salient-object dataset keeps its images and masks, read as each dataset ships them.

Most keep two folders side by side (`images/` + `masks/`, DUTS' `DUTS-TR-Image/` + `DUTS-TR-Mask/`,
DIS5K's `im/` + `gt/`, ...); MSRA-B and MSRA-10K keep an image and its mask in one folder
(`0_0_77.jpg` beside `0_0_77.png`). A mask is always `<image stem>.png`. Which source tree each
layout was taken from is in docs/datasets.md.

The training data (datasets.py) and the captioner (captions/) both enumerate a folder's images here,
so the captioner sees exactly the images training will ask captions for, and never a mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .images import IMAGE_SUFFIXES, images_in

MASK_SUFFIX = ".png"

# (images, masks) sub-folders of ROOT, tried in this order; one name twice = image and mask side by side
FOLDER_LAYOUTS = (
    ("images", "masks"),                                # ours, and anything rearranged
    ("DUTS-TR-Image", "DUTS-TR-Mask"),                  # DUTS training set (DUTS-TR/)
    ("DUTS-TE-Image", "DUTS-TE-Mask"),                  # DUTS test set (DUTS-TE/)
    ("im", "gt"),                                       # DIS5K (DIS-TR/, DIS-VD/, DIS-TE1/ ...)
    ("images", "ground_truth_mask"),                    # ECSSD, CSSD
    ("DUT-OMRON-image", "pixelwiseGT-new-PNG"),         # DUT-OMRON
    ("HRSOD_train", "HRSOD_train_mask"),                # HRSOD training set
    ("HRSOD_test", "HRSOD_test_mask"),                  # HRSOD test set
    ("img", "gt"),                                      # XPIE
    ("Imgs", "Imgs"),                                   # MSRA-10K (MSRA10K_Imgs_GT/), side by side
    (".", "."),                                         # MSRA-B, side by side in ROOT itself
)


@dataclass(frozen=True)
class Layout:
    images_folder: Path
    masks_folder: Path

    @property
    def side_by_side(self) -> bool:
        return self.images_folder == self.masks_folder

    def images(self) -> list[Path]:
        """The dataset's images, sorted; side by side, the .png files are the masks, not images."""
        images = images_in(self.images_folder)
        return [image for image in images if image.suffix.lower() != MASK_SUFFIX] if self.side_by_side else images

    def pairs(self) -> list[tuple[Path, Path]]:
        """Each image with the mask it needs, <masks folder>/<stem>.png (the data check reports missing ones)."""
        return [(image, self.masks_folder / f"{image.stem}{MASK_SUFFIX}") for image in self.images()]


def holds_pairs_side_by_side(folder: Path) -> bool:
    """Whether some non-PNG image of the folder has a PNG of its stem beside it."""
    return folder.is_dir() and any(image.with_suffix(MASK_SUFFIX).is_file() for image in images_in(folder)
                                   if image.suffix.lower() != MASK_SUFFIX)


def find_layout(root: str | Path) -> Layout:
    """The images and masks folders of a salient-object dataset (FOLDER_LAYOUTS, first match)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"the dataset folder {root} does not exist")
    for images, masks in FOLDER_LAYOUTS:
        layout = Layout(root / images, root / masks)  # root / "." is root
        if layout.side_by_side and holds_pairs_side_by_side(layout.images_folder):
            return layout
        if not layout.side_by_side and layout.images_folder.is_dir() and layout.masks_folder.is_dir():
            return layout
    expected = ", ".join(f"{images}/ + {masks}/" for images, masks in FOLDER_LAYOUTS if images != masks)
    raise FileNotFoundError(f"{root} is not a salient-object folder: expected the sub-folders {expected}, or "
                            f"images beside their {MASK_SUFFIX} masks (Imgs/, or ROOT itself); for another layout "
                            "put (or link) its images in images/ and its masks in masks/")


def dataset_images(root: str | Path) -> tuple[Layout, list[Path]]:
    """The layout of ROOT and its images, refusing a folder without any."""
    layout = find_layout(root)
    images = layout.images()
    if not images:
        raise FileNotFoundError(f"{layout.images_folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return layout, images
