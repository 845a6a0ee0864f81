"""The restore task on a Gaussian toy energy with known answers: corruptions, masked Langevin,
restoration with a known and an unknown label, nearest neighbours, the task end to end."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import langevin, viz
from jebm.config import Config
from jebm.eval import EvalContext, check_tasks
from jebm.eval import restore as rs

SHAPE = (4, 4, 1)
NUM_CLASSES = 3
SCALE = 0.5  # E(x, y) = ||x - mu_y||^2 / (2 SCALE^2): each step contracts x - mu_y by 0.9
SAMPLER = langevin.LangevinConfig(num_steps=10, step_size=0.025, noise_scale=0.005, grad_clip=None)


def _means():
  return np.random.default_rng(0).random((NUM_CLASSES,) + SHAPE).astype(np.float32)


def gaussian_energy(x, y):
  """E(x, y) = ||x - mu_y||^2 / (2 SCALE^2): class y is a Gaussian around mean image mu_y."""
  d = (x - jnp.asarray(_means())[y]).reshape(x.shape[0], -1)
  return jnp.sum(jnp.square(d), axis=1) / (2 * SCALE**2)


def _clean(n, seed=1):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % NUM_CLASSES
  images = np.clip(_means()[labels] + 0.03 * rng.normal(size=(n,) + SHAPE), 0, 1)
  return images.astype(np.float32), labels.astype(np.int32)


@functools.cache
def _compiled():
  return rs.restorers(gaussian_energy, SAMPLER, NUM_CLASSES)


def test_masked_langevin_leaves_unmasked_pixels_bit_identical():
  x0 = jax.random.uniform(jax.random.key(0), (30,) + SHAPE)
  _, mask = rs.corrupt(jax.random.key(1), x0, "inpaint_box")
  y = jnp.arange(30, dtype=jnp.int32) % NUM_CLASSES
  # restore_images is langevin.sample(key, energy, x0, sampler, y=y, mask=mask), jitted here
  x = _compiled()(SAMPLER.num_steps, False)(jax.random.key(2), x0, y, mask)
  keep = ~np.broadcast_to(np.asarray(mask), x0.shape)
  assert np.array_equal(np.asarray(x)[keep], np.asarray(x0)[keep])  # bit-identical
  assert float(jnp.abs(x - x0)[mask].min()) > 0  # ... and every masked pixel moved


def test_corruptions_fractions_masks_and_determinism():
  images = np.full((100, 10, 10, 1), 0.5, np.float32)
  key = jax.random.key(3)
  corrupted, mask = rs.corrupt(key, images, "salt_pepper")
  assert mask.shape == (100, 10, 10, 1) and bool(mask.all())
  assert np.mean(corrupted == 0.1) == pytest.approx(0.05, abs=0.005)
  assert np.mean(corrupted == 0.9) == pytest.approx(0.05, abs=0.005)
  assert np.mean(corrupted == 0.5) == pytest.approx(0.90, abs=0.01)
  for kind in rs.CORRUPTIONS:  # one key, one corruption; another key, another
    a, ma = rs.corrupt(key, images, kind)
    b, mb = rs.corrupt(key, images, kind)
    assert np.array_equal(a, b) and np.array_equal(ma, mb), kind
    assert not np.array_equal(a, rs.corrupt(jax.random.key(4), images, kind)[0]), kind
    assert float(a.min()) >= 0 and float(a.max()) <= 1, kind
  _, bottom = rs.corrupt(key, images, "inpaint_bottom")
  assert bool(bottom[:, 5:].all()) and not bool(bottom[:, :5].any())
  x, box = rs.corrupt(key, images, "inpaint_box")
  heights = np.asarray(box[..., 0].any(axis=2).sum(axis=1))
  widths = np.asarray(box[..., 0].any(axis=1).sum(axis=1))
  assert heights.min() >= 2 and heights.max() == 5 and widths.min() >= 2 and widths.max() == 5
  area = np.asarray(box.sum(axis=(1, 2, 3)))
  assert np.array_equal(area, heights * widths)  # one rectangle per image
  assert np.array_equal(np.asarray(x)[~np.asarray(box)[..., 0]], images[~np.asarray(box)[..., 0]])
  noisy, _ = rs.corrupt(key, images, "gaussian", sigma=0.1)
  assert float(np.std(noisy - images)) == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("kind", rs.CORRUPTIONS)
def test_restoration_lowers_mse_and_the_unknown_label_is_found(kind):
  clean, labels = _clean(30)
  corrupted, mask = rs.corrupt(jax.random.key(5), clean, kind)
  compiled = _compiled()  # shared by the four corruptions: one compilation each
  restored = compiled(SAMPLER.num_steps, False)(jax.random.key(6), corrupted, labels, mask)
  before = rs.mse_per_image(corrupted, clean).mean()
  assert rs.mse_per_image(restored, clean).mean() < 0.5 * before
  if kind in rs.INPAINTING:
    keep = ~np.asarray(mask)[..., 0]
    assert np.array_equal(np.asarray(restored)[keep], np.asarray(corrupted)[keep])
  unknown, picked, energies = compiled(SAMPLER.num_steps, True)(jax.random.key(6), corrupted, mask)
  assert energies.shape == (30, NUM_CLASSES) and picked.shape == (30,)
  assert np.mean(np.asarray(picked) == labels) == 1.0
  assert rs.mse_per_image(unknown, clean).mean() < 0.5 * before


def test_nearest_neighbours_match_brute_force():
  rng = np.random.default_rng(7)
  reference, queries = rng.random((37, 3, 3, 1)), rng.random((5, 3, 3, 1))
  distances, indices = rs.nearest_neighbours(queries, reference, 4, chunk_size=8)
  brute = np.linalg.norm(queries.reshape(5, 1, -1) - reference.reshape(1, 37, -1), axis=2)
  np.testing.assert_array_equal(indices, np.argsort(brute, axis=1)[:, :4])
  np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :4], rtol=1e-6)
  with pytest.raises(ValueError, match="R >= k >= 1"):
    rs.nearest_neighbours(queries, reference[:3], 4)


def test_bad_input_is_a_clear_error():
  x = jnp.zeros((2,) + SHAPE)
  with pytest.raises(ValueError, match="unknown corruption 'blur'"):
    rs.corrupt(jax.random.key(0), x, "blur")
  with pytest.raises(ValueError, match=r"float images \[B, H, W, C\]"):
    rs.corrupt(jax.random.key(0), x[0], "gaussian")
  y = jnp.zeros(2, jnp.int32)
  # [H, W] against NHWC images would broadcast to [B, H, W, W]: refused, not silently reshaped.
  for bad in (jnp.ones((4, 4), bool), jnp.ones((3, 4, 4, 1), bool)):
    with pytest.raises(ValueError, match="mask of shape .* does not broadcast to x of shape"):
      rs.restore_images(jax.random.key(0), gaussian_energy, x, y, SAMPLER, bad)
    with pytest.raises(ValueError, match="mask of shape"):
      rs.restore_unknown_label(jax.random.key(0), gaussian_energy, x, NUM_CLASSES, SAMPLER, bad)
  with pytest.raises(ValueError, match=r"labels must be \[B\]"):
    rs.restore_images(jax.random.key(0), gaussian_energy, x, y[:1], SAMPLER)
  for field, value, message in (
    ("corruptions", ("blur",), "corruptions: unknown"),
    ("corruptions", ("gaussian", "gaussian"), "corruptions: unknown, repeated"),
    ("num_images", 0, "num_images must be an int >= 1"),
    ("unknown_label_images", -1, "unknown_label_images must be an int >= 0"),
    ("inpaint_passes", 1.5, "inpaint_passes must be an int >= 1"),
    ("gaussian_sigma", float("nan"), "gaussian_sigma must be a finite number > 0"),
  ):
    with pytest.raises(ValueError, match=message):
      rs.RestoreConfig(**{field: value})
  with pytest.raises(ValueError, match="one or more columns of one shape"):
    viz.rows_grid([np.zeros((2, 4, 4, 1)), np.zeros((3, 4, 4, 1))])


def _toy_context(tmp_path, monkeypatch, **options):
  config = Config(
    dataset="digits",
    example_shape=SHAPE,
    num_classes=NUM_CLASSES,
    langevin_steps=2,  # one sampler pass
    step_size=SAMPLER.step_size,
    noise_scale=SAMPLER.noise_scale,
    grad_clip=0.0,
    eval_langevin_steps=30,
  )
  ctx = EvalContext(
    state=None, config=config, out_dir=str(tmp_path), restore=rs.RestoreConfig(**options)
  )
  ctx.__dict__["energy_fn"] = gaussian_energy  # in place of a checkpoint's network
  for split, seed in (("train", 1), ("test", 2)):
    images, labels = _clean(40, seed)
    ctx._cache[split] = {"image": images, "label": labels}
  ctx._cache["judge"] = (None, 1.0)
  nearest_mean = lambda judge, x: np.argmin(  # the Bayes classifier stands in for the judge
    np.square(np.asarray(x)[:, None] - _means()[None]).reshape(len(x), NUM_CLASSES, -1).sum(2), 1
  )
  monkeypatch.setattr(rs, "judge_predictions", nearest_mean)
  return ctx


TOY_OPTIONS = dict(
  num_images=30,
  unknown_label_images=12,
  noise_passes=5,
  inpaint_passes=5,
  crossclass_passes=10,
  nn_samples_per_class=3,
)


def test_the_task_end_to_end_on_the_toy(tmp_path, monkeypatch):
  report = rs.evaluate(_toy_context(tmp_path, monkeypatch, **TOY_OPTIONS))
  json.dumps(report, allow_nan=False)
  for kind in rs.CORRUPTIONS:
    entry = report[kind]
    for key in ("mse_train", "mse_test", "mse_corrupted_train", "mse_corrupted_test"):
      assert key in entry and key + "_std" in entry, (kind, key)
    assert entry["baseline"] == ("mean_fill" if kind in rs.INPAINTING else "median_filter")
    assert entry["mse_test"] < entry["mse_corrupted_test"], kind
    assert entry["mse_train"] < entry["mse_corrupted_train"], kind
    assert {"mse_baseline_train", "mse_baseline_test", "mse_test_unknown_label"} <= set(entry)
    assert entry["unknown_label_accuracy"] == 1.0 and entry["unknown_label_num_images"] == 12
    assert entry["langevin_steps"] == 10
  cross = report["crossclass"]
  assert cross["judge_accuracy"] == 1.0 and cross["judge_accuracy_start_as_target"] == 0.0
  assert cross["judge_accuracy_start_as_source"] == 1.0 and cross["langevin_steps"] == 20
  nn = report["nearest_neighbours"]
  assert nn["num_samples"] == 9 and nn["samples_judge_accuracy"] == 1.0
  assert 0 < nn["sample_to_train_l2_mean"] and 0 < nn["test_to_train_l2_mean"]
  for name, path in report["png"].items():
    assert path.endswith(".png") and (tmp_path / path.split("/")[-1]).is_file(), name
  # The same seed gives the same numbers, whichever other corruptions run.
  options = dict(TOY_OPTIONS, corruptions=("inpaint_box",), unknown_label_images=0)
  again = rs.evaluate(_toy_context(tmp_path, monkeypatch, **options))
  for key, value in again["inpaint_box"].items():
    assert report["inpaint_box"][key] == value, key
  assert again["crossclass"] == report["crossclass"]


def test_the_task_needs_a_conditional_image_model(tmp_path):
  unconditional = Config(dataset="digits", example_shape=SHAPE, num_classes=0)
  with pytest.raises(ValueError, match="needs a conditional model"):
    check_tasks(["restore"], unconditional)
  with pytest.raises(ValueError, match="needs a conditional model"):
    rs.evaluate(EvalContext(state=None, config=unconditional, out_dir=str(tmp_path)))
