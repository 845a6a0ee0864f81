"""dSprites drawn from its factors: known geometry of the drawings, and the TFDS builder's records
(procedural and from DeepMind's file) whose latents reproduce their images."""

import numpy as np
import pytest

import jebm.data as jd
from jebm.data import dsprites as ds
from jebm.data.builders.dsprites import DEEPMIND_FILE

SQUARE, ELLIPSE, HEART = range(3)


def _centroid(image):
  rows, cols = np.nonzero(image)
  return rows.mean(), cols.mean()


def test_drawings_have_the_factors_geometry():
  area = lambda *factors: int((ds.render(*factors) > 0).sum())
  for shape in range(3):  # area grows as scale^2
    ratio = area(shape, 1.0, 0.3, 0.5, 0.5) / area(shape, 0.5, 0.3, 0.5, 0.5)
    assert 3.5 < ratio < 4.5, (shape, ratio)
  assert area(SQUARE, 1.0, 0.0, 0.5, 0.5) == 18 * 18  # half-size 9 pixels, axis-aligned
  np.testing.assert_array_equal(  # 0 and 2 pi draw alike; a square has a quarter-turn symmetry
    ds.render(HEART, 0.7, 0.0, 0.3, 0.6), ds.render(HEART, 0.7, ds.ORIENTATIONS[-1], 0.3, 0.6)
  )
  np.testing.assert_array_equal(
    ds.render(SQUARE, 0.8, 0.0, 0.5, 0.5), ds.render(SQUARE, 0.8, np.pi / 2, 0.5, 0.5)
  )
  ellipse = ds.render(ELLIPSE, 1.0, 0.0, 0.5, 0.5) > 0  # long axis horizontal, then vertical
  rows, cols = np.nonzero(ellipse)
  assert np.ptp(cols) > 1.8 * np.ptp(rows)
  rows, cols = np.nonzero(ds.render(ELLIPSE, 1.0, np.pi / 2, 0.5, 0.5))
  assert np.ptp(rows) > 1.8 * np.ptp(cols)
  for x, y in ((0.0, 0.0), (1.0, 0.25), (0.5, 1.0)):  # x: left to right, y: top to bottom
    row, col = _centroid(ds.render(SQUARE, 0.5, 0.0, x, y))
    assert abs(col - (ds.LOW + x * (ds.HIGH - ds.LOW))) < 0.6
    assert abs(row - (ds.LOW + y * (ds.HIGH - ds.LOW))) < 0.6
  heart = ds.render(HEART, 1.0, 0.0, 0.5, 0.5) > 0  # lobes up: two runs in the top rows
  top = heart[np.nonzero(heart.any(1))[0][0]]
  assert np.count_nonzero(np.diff(top.astype(int)) == 1) == 2


def test_grid_indices_and_latents():
  assert ds.NUM_IMAGES == 737_280
  classes = ds.latent_classes(np.array([0, 1, 32, ds.NUM_IMAGES - 1]))
  np.testing.assert_array_equal(
    classes, [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [2, 5, 39, 31, 31]]
  )
  values = ds.latent_values(classes)
  np.testing.assert_allclose(values[-1], [2, 1.0, 2 * np.pi, 1.0, 1.0], rtol=1e-6)
  index = np.array([0, 1, 32, 123_456, ds.NUM_IMAGES - 1])  # values, nudged, map back to the grid
  nudged = ds.latent_values(ds.latent_classes(index)) + np.array([0.2, 0.02, 0.03, 0.01, -0.01])
  np.testing.assert_array_equal(ds.nearest_index(nudged), index)


def test_procedural_builder_records_are_drawn_from_their_latents(tmp_path, monkeypatch):
  monkeypatch.setattr(ds, "NUM_IMAGES", 300)  # the first 300 grid images, not 737,280
  source = jd.load("dsprites", "train", data_dir=tmp_path)
  assert len(source) == 300
  for i in (0, 1, 150, 299):
    record = source[i]
    assert record["image"].shape == (64, 64, 1) and record["image"].dtype == np.uint8
    np.testing.assert_array_equal(record["latents_classes"], ds.latent_classes(np.array([i]))[0])
    shape, *values = record["latents_values"]
    np.testing.assert_array_equal(record["image"][..., 0], ds.render(int(shape), *values))
    assert record["label"] == shape == 0


def test_deepmind_file_is_read_from_the_manual_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match=DEEPMIND_FILE):
    jd.load("dsprites/deepmind", "train", data_dir=tmp_path, manual_dir=tmp_path)
  index = np.array([5, 70_000, ds.NUM_IMAGES - 1])
  drawn = ds.images(index)
  classes = np.concatenate([np.zeros((3, 1), np.int64), drawn["latents_classes"]], 1)
  values = np.concatenate([np.ones((3, 1)), drawn["latents_values"]], 1)
  values[:, 1] += 1  # DeepMind's shape values are 1, 2, 3
  np.savez(
    tmp_path / DEEPMIND_FILE,
    imgs=drawn["image"][..., 0] // 255,  # DeepMind's images hold 0 and 1
    latents_classes=classes,
    latents_values=values,
  )
  got = jd.arrays("dsprites/deepmind", "train", data_dir=tmp_path / "data", manual_dir=tmp_path)
  np.testing.assert_array_equal(got["image"], drawn["image"])
  np.testing.assert_array_equal(got["label"], drawn["latents_classes"][:, 0])
  source = jd.load("dsprites/deepmind", "train", data_dir=tmp_path / "data")
  np.testing.assert_allclose(source[2]["latents_values"], drawn["latents_values"][2])


def test_condition_vectors_of_each_factor():
  values = ds.latent_values(ds.latent_classes(np.array([0, ds.NUM_IMAGES - 1])))
  np.testing.assert_allclose(ds.condition_vectors("position", values), [[0, 0], [1, 1]])
  np.testing.assert_allclose(ds.condition_vectors("scale", values), [[0.5], [1.0]])
  np.testing.assert_array_equal(ds.condition_vectors("shape", values), [[1, 0, 0], [0, 0, 1]])
  np.testing.assert_allclose(ds.condition_vectors("rotation", values), [[1, 0], [1, 0]], atol=1e-6)
  for name, width in ds.CONDITIONS.items():
    assert ds.condition_vectors(name, values[0]).shape == (width,)
  with pytest.raises(ValueError, match="unknown dSprites condition 'colour'"):
    ds.condition_vectors("colour", values)
