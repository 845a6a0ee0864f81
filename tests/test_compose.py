"""Composed energies sample what probability theory says they should."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import compose, langevin

STEP = 0.005
CONFIG = langevin.LangevinConfig(
  num_steps=2000,
  step_size=STEP,
  noise_scale=np.sqrt(2 * STEP),
  grad_clip=None,
  x_min=None,
  x_max=None,
)


def gaussian(mean, std):
  return lambda x, y=None: 0.5 * jnp.sum((x - mean) ** 2, axis=1) / std**2


def _sample(energy_fn, x0, seed=0):
  return np.asarray(
    jax.jit(langevin.sample, static_argnums=(1, 3))(jax.random.key(seed), energy_fn, x0, CONFIG)[0]
  )


def test_product_samples_precision_weighted_mean():
  m1, s1, m2, s2 = -1.0, 0.5, 2.0, 1.0
  x = _sample(compose.product(gaussian(m1, s1), gaussian(m2, s2)), jnp.zeros((4000, 1)))
  precision = 1 / s1**2 + 1 / s2**2
  mean, std = (m1 / s1**2 + m2 / s2**2) / precision, precision**-0.5  # 0.4, 0.447
  assert abs(x.mean() - mean) < 4 * std / np.sqrt(len(x)) + 0.01
  assert abs(x.std() - std) / std < 0.05


def test_sequential_steps_concentrate_where_both_conditions_hold():
  # Two experts on different coordinates (x0 near 1, x1 near -2), stepped in turn as the paper's
  # per-model updates: the chains settle where both hold. Every step adds noise to both
  # coordinates but pulls on one, so each coordinate sits at twice the temperature: std 0.3 * sqrt 2
  # (the product of experts, one gradient of the sum, keeps 0.3).
  along_0 = lambda x, y=None: 0.5 * (x[:, 0] - 1.0) ** 2 / 0.3**2
  along_1 = lambda x, y=None: 0.5 * (x[:, 1] + 2.0) ** 2 / 0.3**2
  run = jax.jit(
    lambda x0: langevin.sample_ensemble(jax.random.key(0), [along_0, along_1], x0, CONFIG)
  )
  x = np.asarray(run(jnp.zeros((2000, 2)))[0])
  np.testing.assert_allclose(x.mean(0), [1.0, -2.0], atol=0.03)
  np.testing.assert_allclose(x.std(0), 0.3 * np.sqrt([2, 2]), rtol=0.08)


def test_weighted_product_and_temperature_scale_precision():
  e = gaussian(0.0, 1.0)
  x_product = _sample(compose.product(e, weights=[4.0]), jnp.zeros((4000, 1)))
  x_temp = _sample(compose.temperature(e, 4.0), jnp.zeros((4000, 1)))
  assert abs(x_product.std() - 0.5) < 0.03  # p^4: std / 2
  assert abs(x_temp.std() - 2.0) < 0.12  # p^(1/4): std * 2


def test_mixture_puts_samples_in_both_modes():
  energy = compose.mixture(gaussian(-3.0, 0.5), gaussian(3.0, 0.5))
  x0 = jax.random.uniform(jax.random.key(1), (2000, 1), minval=-6.0, maxval=6.0)
  x = _sample(energy, x0)
  left, right = np.mean(np.abs(x + 3) < 1.5), np.mean(np.abs(x - 3) < 1.5)
  assert 0.4 < left < 0.6 and 0.4 < right < 0.6, (left, right)
  assert left + right > 0.99  # almost nothing between or outside the modes


def test_mixture_energy_is_negative_logsumexp():
  e1, e2 = gaussian(0.0, 1.0), gaussian(1.0, 1.0)
  x = jnp.array([[0.3], [2.0]])
  expected = -np.logaddexp(np.log(0.25) - e1(x), np.log(0.75) - e2(x))
  np.testing.assert_allclose(compose.mixture(e1, e2, weights=[0.25, 0.75])(x), expected, rtol=1e-6)


def test_negation_pushes_away_from_other_mode():
  energy = compose.negation(gaussian(0.0, 1.0), gaussian(1.0, 1.0), weight=0.5)
  # E = x²/2 - (x-1)²/4 = x²/4 + x/2 - 1/4: a Gaussian with mean -1, std sqrt(2).
  x = _sample(energy, jnp.zeros((4000, 1)))
  assert abs(x.mean() + 1.0) < 0.1 and abs(x.std() - np.sqrt(2)) < 0.1


def test_condition_fixes_label():
  energy = lambda x, y: jnp.sum((x - y) ** 2, axis=1)
  x = jnp.array([[1.0, 1.0], [0.0, 0.0]])
  np.testing.assert_allclose(compose.condition(energy, jnp.array([1.0, 1.0]))(x), [0.0, 2.0])
  per_example = compose.condition(energy, x, per_example=True)
  np.testing.assert_allclose(per_example(x), [0.0, 0.0])
  with pytest.raises(ValueError, match="already fixed"):
    per_example(x, x)


def test_composition_errors():
  with pytest.raises(ValueError, match="2 energy fns but 1 weights"):
    compose.product(gaussian(0, 1), gaussian(1, 1), weights=[1.0])
  with pytest.raises(ValueError, match="positive"):
    compose.mixture(gaussian(0, 1), weights=[0.0])
  with pytest.raises(ValueError, match="temperature"):
    compose.temperature(gaussian(0, 1), 0.0)
