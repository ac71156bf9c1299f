"""Image grids (aimass.producer.images)."""

from __future__ import annotations

import numpy as np
import pytest

from aimass.producer.images import layout_for, tile, upscale_factor
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.unit


def test_grids_upscale_small_images_and_tile_them_square() -> None:
    assert upscale_factor(32, 32) == 4
    assert upscale_factor(8, 8) == 16
    assert upscale_factor(227, 227) == 1
    layout = layout_for(16, (32, 32))
    assert (layout.columns, layout.rows, layout.tile) == (4, 4, (128, 128))
    assert layout.size == (4 * 128 + 5 * 2, 4 * 128 + 5 * 2)
    images = [row_image(i % 8) for i in range(5)]
    grid = tile(images)
    assert grid.size == layout_for(5, (8, 8)).size == (3 * 128 + 8, 2 * 128 + 6)
    pixels = np.asarray(grid.convert("L"))
    x, y = layout_for(5, (8, 8)).origin(4)  # fifth tile: row 4 of the 8x8 image is white
    assert pixels[y + 4 * 16 + 8, x + 64] == 255 and pixels[y + 8, x + 64] == 0
