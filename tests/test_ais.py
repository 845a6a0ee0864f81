"""AIS bounds on log Z against closed forms: a 784-d Gaussian restricted to [0, 1]^784 and a 2-D
Gaussian mixture restricted to a box, both with exact samples for the reverse chains."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jebm import ais


def _medians(energy_fn, base, exact, num_temperatures, leapfrog_steps, num_seeds, num_chains=16):
  """Medians over seeds of the lower and the upper bound (16 forward and 16 reverse chains each)."""

  def bounds(seed):
    starts = exact.sample(jax.random.fold_in(jax.random.key(1), seed), num_chains)
    return ais.log_z_bounds(
      jax.random.fold_in(jax.random.key(0), seed), energy_fn, base, num_temperatures, num_chains,
      reverse_starts=starts, leapfrog_steps=leapfrog_steps,
    )  # fmt: skip

  result = jax.jit(jax.vmap(bounds))(jnp.arange(num_seeds))
  return np.median(result.lower), np.median(result.upper)


def test_truncated_normal_log_z_matches_numerical_integration():
  for mean, std, low, high in ((0.5, 0.2, 0.0, 1.0), (0.95, 0.05, 0.0, 1.0), (-3.0, 0.4, 0.0, 1.0)):
    mass, _ = integrate.quad(lambda x: math.exp(-((x - mean) ** 2) / (2 * std**2)), low, high)
    assert ais.truncated_normal_log_z(mean, std, low, high) == pytest.approx(
      math.log(mass), abs=1e-3
    )


def test_gaussian_restricted_to_the_unit_box_in_784_dimensions():
  shape, mean, std = (28, 28, 1), 0.5, 0.2
  energy = lambda x, y=None: jnp.sum(jnp.square(x - mean).reshape(x.shape[0], -1), 1) / (2 * std**2)
  true = ais.truncated_normal_log_z(jnp.full(shape, mean), jnp.full(shape, std), 0.0, 1.0)
  exact = ais.truncated_normal_base(jnp.full(shape, mean), jnp.full(shape, std))
  base = ais.uniform_base(shape)
  # A short path: both bounds are loose, on the right side of the truth.
  lower, upper = _medians(energy, base, exact, num_temperatures=100, leapfrog_steps=1, num_seeds=5)
  assert lower < true - 10 and upper > true + 10
  # A long one: both within 1 nat. (Here the gap is below the seeds' spread, so which side of the
  # truth each median falls on is chance; the short path above checks the sides.)
  lower, upper = _medians(energy, base, exact, num_temperatures=1000, leapfrog_steps=5, num_seeds=5)
  assert abs(lower - true) < 1 and abs(upper - true) < 1


def test_two_dimensional_gaussian_mixture_with_separated_modes():
  means = jnp.array([[-2.0, -2.0], [2.0, 2.0], [-2.0, 2.5]])
  weights = jnp.array([0.5, 0.3, 0.2])
  std, box = 0.3, (-4.0, 4.0)

  def energy(x, y=None):
    log_normal = -jnp.sum(jnp.square(x[:, None] - means), -1) / (2 * std**2)
    return -jax.nn.logsumexp(log_normal + jnp.log(weights), axis=1)

  mass = stats.norm.cdf((box[1] - np.asarray(means)) / std) - stats.norm.cdf(
    (box[0] - np.asarray(means)) / std
  )
  true = math.log(float(np.sum(np.asarray(weights) * np.prod(mass, 1))) * 2 * math.pi * std**2)

  def sample(key, num):
    pick, noise = jax.random.split(key)
    component = jax.random.choice(pick, len(weights), (num,), p=weights)
    z = jax.random.truncated_normal(
      noise, (box[0] - means[component]) / std, (box[1] - means[component]) / std
    )
    return means[component] + std * z

  base = ais.uniform_base((2,), *box)
  exact = base._replace(sample=sample)
  # A short path: the gap is small here, so it takes many seeds for the medians to show its sides.
  lower, upper = _medians(energy, base, exact, num_temperatures=5, leapfrog_steps=1, num_seeds=49)
  assert lower < true < upper
  lower, upper = _medians(energy, base, exact, num_temperatures=500, leapfrog_steps=3, num_seeds=9)
  assert abs(lower - true) < 0.15 and abs(upper - true) < 0.15  # sides: chance, as above


def test_reflection_keeps_chains_in_the_box_and_flips_momentum_per_bounce():
  low, high = jnp.zeros(3), jnp.ones(3)
  x, p = ais._reflect(jnp.array([1.25, -0.5, 2.5]), jnp.ones(3), low, high)
  np.testing.assert_allclose(x, [0.75, 0.5, 0.5])
  np.testing.assert_array_equal(p, [-1.0, -1.0, 1.0])  # one, one and two bounces


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda: ais.uniform_base((2,), 0.0, jnp.inf), "bounded domain"),
    (lambda: ais.uniform_base((2,), 1.0, 0.0), "bounded domain"),
    (lambda: ais.sigmoid_schedule(1), ">= 2"),
    (lambda: ais.truncated_normal_base(jnp.zeros(2), jnp.zeros(2)), "std > 0"),
    (
      lambda: ais.log_z_bounds(
        jax.random.key(0), lambda x, y=None: x.sum(1), ais.uniform_base((2,)), 1, 4
      ),
      ">= 2",
    ),
  ],
)
def test_bad_input_is_a_clear_error(call, message):
  with pytest.raises(ValueError, match=message):
    call()
