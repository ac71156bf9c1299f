"""Image grids a person can look at: generated images tiled, small ones upscaled."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Small images are enlarged (nearest neighbour, whole multiples) to about this many
# pixels on their longer side: a 32x32 digit becomes 128x128.
TARGET_TILE_PX = 128
PADDING_PX = 2
BACKGROUND = 64  # dark grey between tiles, so black image edges stay visible


@dataclass(frozen=True)
class GridLayout:
    """Where tiles go: ``columns`` x ``rows`` tiles of ``tile`` (w, h) pixels."""

    columns: int
    rows: int
    tile: tuple[int, int]
    padding: int = PADDING_PX

    @property
    def size(self) -> tuple[int, int]:
        width = self.columns * self.tile[0] + (self.columns + 1) * self.padding
        height = self.rows * self.tile[1] + (self.rows + 1) * self.padding
        return width, height

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left pixel of tile ``index`` (row-major)."""
        row, column = divmod(index, self.columns)
        return (
            self.padding + column * (self.tile[0] + self.padding),
            self.padding + row * (self.tile[1] + self.padding),
        )


def upscale_factor(width: int, height: int, target: int = TARGET_TILE_PX) -> int:
    """The whole factor that brings an image's longer side close to ``target``."""
    return max(1, target // max(width, height, 1))


def layout_for(
    count: int, image_size: tuple[int, int], columns: int | None = None, scale: int | None = None
) -> GridLayout:
    """A near-square grid (``ceil(sqrt(count))`` columns unless given)."""
    if count < 1:
        raise ValueError("a grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(count))
    factor = scale or upscale_factor(*image_size)
    return GridLayout(
        columns=columns,
        rows=math.ceil(count / columns),
        tile=(image_size[0] * factor, image_size[1] * factor),
    )


def as_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image from a PIL image or an array (uint8, or floats in [0, 1])."""
    if isinstance(image, Image.Image):
        return image
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return Image.fromarray(pixels)


def tile(
    images: Sequence[Image.Image | np.ndarray], columns: int | None = None, scale: int | None = None
) -> Image.Image:
    """One RGB image with the images in a grid, in order, row by row; images of other
    sizes than the first are resized to it."""
    pictures = [as_image(image) for image in images]
    layout = layout_for(len(pictures), pictures[0].size, columns, scale)
    grid = Image.new("RGB", layout.size, (BACKGROUND,) * 3)
    for index, picture in enumerate(pictures):
        enlarged = picture.convert("RGB").resize(layout.tile, Image.Resampling.NEAREST)
        grid.paste(enlarged, layout.origin(index))
    return grid
