"""Image grids, chain strips and histogram PNGs: shapes, dtypes, and that PNGs load back."""

import os

import numpy as np
import pytest
from PIL import Image

from jebm import viz


def test_image_grid_shape_layout_and_grey_channel():
  images = np.zeros((5, 4, 3, 1), np.float32)
  images[2] = 1.0
  grid = viz.image_grid(images, ncol=3, pad=1)
  assert grid.dtype == np.uint8 and grid.shape == (2 * 5 + 1, 3 * 4 + 1, 1)
  # Image 2 sits in row 0, column 2; image 5 does not exist, so its cell is padding.
  np.testing.assert_array_equal(grid[1:5, 9:12], 255)
  np.testing.assert_array_equal(grid[1:5, 1:4], 0)
  assert grid[0, 0, 0] == 128 and grid[7, 10, 0] == 128


def test_image_grid_default_ncol_uint8_rgb_and_no_pad():
  images = np.random.default_rng(0).integers(0, 256, (10, 2, 2, 3), dtype=np.uint8)
  grid = viz.image_grid(images, pad=0)
  assert grid.shape == (3 * 2, 4 * 2, 3)  # ceil(sqrt(10)) = 4 columns, 3 rows.
  np.testing.assert_array_equal(grid[0:2, 2:4], images[1])
  np.testing.assert_array_equal(grid[4:6, 2:4], images[9])


def test_image_grid_clips_floats_and_accepts_nhw():
  grid = viz.image_grid(np.array([[[-1.0, 0.5], [2.0, 1.0]]]), pad=0)
  np.testing.assert_array_equal(grid[..., 0], [[0, 128], [255, 255]])
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    viz.image_grid(np.zeros((2, 2)))


def test_chain_grid_puts_three_panels_side_by_side():
  starts, samples = np.zeros((4, 5, 5, 1)), np.ones((4, 5, 5, 1))
  reals = np.full((9, 5, 5, 1), 0.25)
  out = viz.chain_grid(starts, samples, reals, pad=1, gap=4)
  panel = 2 * 6 + 1  # 2x2 images of 5 pixels with 1-pixel padding.
  real_height = 5 * 6 + 1  # Same 2 columns as the samples, so 9 reals take 5 rows.
  assert out.dtype == np.uint8
  assert out.shape == (real_height, 3 * panel + 2 * 4, 1)
  np.testing.assert_array_equal(out[1:6, panel + 4 + 1 : panel + 4 + 6], 255)  # First sample.
  np.testing.assert_array_equal(out[1:6, 1:6], 0)  # First start.


def test_save_png_round_trip_grey_and_rgb(tmp_path):
  grey = viz.image_grid(np.random.default_rng(1).random((6, 8, 8, 1)))
  path = viz.save_png(tmp_path / "a" / "b" / "grey.png", grey)
  loaded = np.asarray(Image.open(path))
  np.testing.assert_array_equal(loaded, grey[..., 0])
  rgb = np.random.default_rng(2).integers(0, 256, (7, 9, 3), dtype=np.uint8)
  viz.save_png(tmp_path / "rgb.png", rgb)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")]  # No temp files left.
  with pytest.raises(ValueError, match="save_png"):
    viz.save_png(tmp_path / "bad.png", np.zeros((4, 4, 2), np.uint8))


def test_save_histograms_writes_a_png(tmp_path):
  rng = np.random.default_rng(3)
  values = {
    "train": rng.normal(0, 1, 500),
    "test": rng.normal(1, 1, 300),
    "broken": np.array([np.nan, np.inf, 1.0]),
  }
  path = viz.save_histograms(tmp_path / "h" / "energies.png", values, "energies")
  image = Image.open(path)
  assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
  with pytest.raises(ValueError, match="at least one"):
    viz.save_histograms(tmp_path / "x.png", {}, "nothing")


def test_preview_grid_stays_screen_sized_whatever_the_number_of_samples():
  images = np.random.default_rng(0).uniform(size=(5000, 8, 8, 1)).astype(np.float32)
  labels = np.repeat(np.arange(10), 500)
  grid = viz.preview_grid(images, labels)  # 10 rows of 20 (pad 1): 10 * 9 + 1 by 20 * 9 + 1
  assert grid.shape == (91, 181, 1)
  assert np.array_equal(grid[1:9, 1:9], viz.image_grid(images[:1], pad=0))  # class 0 first
  assert np.array_equal(grid[10:18, 1:9], viz.image_grid(images[500:501], pad=0))  # class 1
  assert viz.preview_grid(images).shape == (181, 181, 1)  # unlabelled: 20 x 20 of the first
  assert viz.preview_grid(images, np.full(5000, -1)).shape == (181, 181, 1)
  uneven = viz.preview_grid(images[:3], np.array([0, 0, 1]))  # 2 rows of 2, one blank
  assert uneven.shape == (19, 19, 1) and not uneven[10:18, 10:18].any()
  with pytest.raises(ValueError, match="max_per_row, max_rows >= 1"):
    viz.preview_grid(images, labels, max_per_row=0)
