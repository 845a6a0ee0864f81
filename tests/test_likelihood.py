"""The likelihood task on class-conditional Gaussian energies, whose log Z per class is known in
closed form (erf), and its settings' errors."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import ais
from jebm.config import Config
from jebm.eval import EvalContext, LikelihoodConfig
from jebm.eval import likelihood as lk

SHAPE, NUM_CLASSES, SCALE = (4, 4, 1), 3, 0.3
MEANS = np.random.default_rng(0).uniform(0.2, 0.8, (NUM_CLASSES,) + SHAPE).astype(np.float32)


def gaussian_energy(x, y):
  d = (x - jnp.asarray(MEANS)[y]).reshape(x.shape[0], -1)
  return jnp.sum(jnp.square(d), axis=1) / (2 * SCALE**2)


def _split(n, seed):
  rng = np.random.default_rng(seed)
  labels = (np.arange(n) % NUM_CLASSES).astype(np.int32)
  images = np.clip(MEANS[labels] + SCALE * rng.normal(size=(n,) + SHAPE), 0, 1)
  return {"image": (np.round(images * 255) / 255).astype(np.float32), "label": labels}


def _context(tmp_path, **settings):
  config = Config(dataset="digits", example_shape=SHAPE, num_classes=NUM_CLASSES)
  ctx = EvalContext(
    state=None, config=config, out_dir=str(tmp_path), likelihood=LikelihoodConfig(**settings)
  )
  ctx.__dict__["energy_fn"] = gaussian_energy  # in place of a checkpoint's network
  ctx._cache.update(train=_split(300, 1), test=_split(60, 2))
  return ctx


def test_known_log_z_and_log_likelihood(tmp_path):
  settings = dict(temperatures=(2, 100), chains=16, leapfrog_steps=2, num_images=60)
  report = lk.evaluate(_context(tmp_path, **settings))
  json.dumps(report, allow_nan=False)
  true = [ais.truncated_normal_log_z(m, SCALE, 0.0, 1.0) for m in MEANS]
  np.testing.assert_allclose(report["log_z_lower_per_class"], true, atol=0.2)
  np.testing.assert_allclose(report["log_z_upper_per_class"], true, atol=0.2)
  assert report["log_z_lower"] == pytest.approx(float(jax.nn.logsumexp(jnp.array(true))), abs=0.2)
  # The path of 2 temperatures is plain importance sampling from the uniform base: a looser bracket.
  assert report["paths"]["2"]["gap"] > report["paths"]["100"]["gap"]
  # The log-likelihood the task reports, by hand with the true normalisers (same dequantisation).
  ctx = _context(tmp_path, **settings)
  x = lk._dequantized(ctx, "test", 60, jax.random.split(jax.random.key(0), 4)[1])
  table = np.stack([gaussian_energy(jnp.asarray(x), jnp.full(60, k)) for k in range(3)], 1)
  log_p = jax.nn.logsumexp(-table - np.array(true), axis=1) - math.log(NUM_CLASSES)
  assert report["log_likelihood_nats"] == pytest.approx(float(np.mean(log_p)), abs=0.2)
  dims = int(np.prod(SHAPE))
  assert report["bits_per_dim"] == pytest.approx(
    (-report["log_likelihood_nats"] / dims + math.log(256)) / math.log(2)
  )
  assert report["bits_per_dim"] < report["base_bits_per_dim"] == pytest.approx(8.0)  # uniform
  assert (tmp_path / "likelihood_gap.png").is_file()
  # A Gaussian base fitted to the training data: the same normalisers.
  fitted = lk.evaluate(_context(tmp_path, **dict(settings, temperatures=(100,), base="gaussian")))
  np.testing.assert_allclose(fitted["log_z_lower_per_class"], true, atol=0.2)


@pytest.mark.parametrize(
  "settings, message",
  [
    (dict(temperatures=(1,)), "temperatures: the number of temperatures must be >= 2"),
    (dict(temperatures=(100, 10)), "temperatures must increase"),
    (dict(temperatures=()), "at least one"),
    (dict(base="normal"), "base: unknown base 'normal'"),
    (dict(chains=0), "chains must be an int >= 1"),
  ],
)
def test_bad_settings_are_clear_errors(settings, message):
  with pytest.raises(ValueError, match=message):
    LikelihoodConfig(**settings)


def test_too_few_test_images_of_a_class_for_the_reverse_chains(tmp_path):
  with pytest.raises(ValueError, match="reverse chains need 30 test examples of every class"):
    lk.evaluate(_context(tmp_path, temperatures=(2,), chains=30, num_images=60))
