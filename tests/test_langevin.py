"""Langevin samplers on energies with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import langevin

MEAN = np.array([1.0, -2.0], np.float32)
COV = np.array([[1.0, 0.5], [0.5, 2.0]], np.float32)
PRECISION = np.linalg.inv(COV)


def gaussian_energy(x, y=None):
  d = x - MEAN
  return 0.5 * jnp.einsum("bi,ij,bj->b", d, PRECISION, d)


def _moments(x):
  x = np.asarray(x, np.float64)
  return x.mean(0), np.cov(x.T)


def _assert_moments(x, bias_tol):
  """Mean and covariance within 4 Monte Carlo standard errors of N independent chains, plus a
  discretisation-bias allowance (ULA's stationary covariance is off by O(step_size))."""
  n = x.shape[0]
  mean, cov = _moments(x)
  mean_se = np.sqrt(np.diag(COV) / n)
  cov_se = np.sqrt((COV**2 + np.outer(np.diag(COV), np.diag(COV))) / n)  # Wishart variance
  np.testing.assert_array_less(np.abs(mean - MEAN), 4 * mean_se)
  np.testing.assert_array_less(np.abs(cov - COV), 4 * cov_se + bias_tol * np.abs(COV).max())


def test_unadjusted_langevin_recovers_gaussian_moments():
  step = 0.01
  config = langevin.LangevinConfig(
    num_steps=2000,
    step_size=step,
    noise_scale=np.sqrt(2 * step),
    grad_clip=None,
    x_min=None,
    x_max=None,
  )
  x0 = jnp.zeros((4000, 2))
  x, info = jax.jit(langevin.sample, static_argnums=(1, 3))(
    jax.random.key(0), gaussian_energy, x0, config
  )
  # ULA's covariance bias is about step * λ_max(P) / 2 ≈ 1% relative here; allow 2%.
  _assert_moments(x, bias_tol=0.02)
  assert info.energy.shape == (2000, 4000)
  np.testing.assert_array_equal(info.acceptance, 1.0)


def test_mala_recovers_gaussian_moments_with_large_steps():
  step = 0.3  # ULA at this step would be biased by ~15%; MALA is exact at any step size.
  config = langevin.LangevinConfig(
    num_steps=1000,
    step_size=step,
    noise_scale=np.sqrt(2 * step),
    grad_clip=None,
    x_min=None,
    x_max=None,
    metropolis=True,
  )
  x0 = jnp.zeros((4000, 2))
  x, info = jax.jit(langevin.sample, static_argnums=(1, 3))(
    jax.random.key(1), gaussian_energy, x0, config
  )
  _assert_moments(x, bias_tol=0.0)
  rate = float(jnp.mean(info.acceptance))
  assert 0.0 < rate <= 1.0 and 0.3 < rate < 0.99, rate


def test_one_igebm_step_matches_hand_computation():
  config = langevin.LangevinConfig(
    num_steps=1, step_size=0.5, noise_scale=0.1, grad_clip=0.3, x_min=0.0, x_max=1.0
  )
  target = jnp.array([[2.0, -1.0, 0.5]])
  energy = lambda x, y=None: jnp.sum((x - target) ** 2 * jnp.array([1.0, 3.0, 0.1]), axis=1)
  x = jnp.array([[0.2, 0.9, 0.5], [0.6, 0.1, 0.95]])
  key = jax.random.key(7)
  new_state, info = langevin.step(key, langevin.init(x, energy), energy, config)

  noisy = np.asarray(x) + 0.1 * np.asarray(jax.random.normal(key, x.shape))  # 1. noise
  grad = 2 * (noisy - np.asarray(target)) * np.array([1.0, 3.0, 0.1])  # 2. gradient
  clipped = np.clip(grad, -0.3, 0.3)  # 3. clip
  moved = noisy - 0.5 * clipped  # 4. step
  expected = np.clip(moved, 0.0, 1.0)  # 5. clamp
  np.testing.assert_allclose(new_state.x, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(info.grad_norm, np.linalg.norm(grad, axis=1), rtol=1e-5)


def test_norm_clipping_bounds_each_example():
  config = langevin.LangevinConfig(
    num_steps=1,
    step_size=1.0,
    noise_scale=0.0,
    grad_clip=0.5,
    clip_mode="norm",
    x_min=None,
    x_max=None,
  )
  grad = jnp.array([[3.0, 4.0], [0.1, 0.2]])
  clipped = langevin.clip_grad(grad, config)
  np.testing.assert_allclose(clipped[0], [0.3, 0.4], rtol=1e-5)  # norm 5 -> 0.5
  np.testing.assert_allclose(clipped[1], [0.1, 0.2], rtol=1e-6)  # already inside


def test_mask_keeps_unmasked_entries_fixed():
  config = langevin.LangevinConfig(num_steps=20, step_size=0.1, noise_scale=0.05, grad_clip=None)
  x0 = jnp.full((3, 4, 4, 1), 0.5)
  mask = jnp.zeros((1, 4, 4, 1), bool).at[:, :2].set(True)
  energy = lambda x, y=None: jnp.sum((x - 0.9) ** 2, axis=(1, 2, 3))
  x, _ = langevin.sample(jax.random.key(0), energy, x0, config, mask=mask)
  np.testing.assert_array_equal(x[:, 2:], 0.5)
  assert float(jnp.mean(x[:, :2])) > 0.8


@pytest.mark.parametrize("metropolis", [False, True])
def test_box_keeps_every_chain_within_delta_of_its_start(metropolis):
  config = langevin.LangevinConfig(
    num_steps=100, step_size=0.0005, noise_scale=0.03, grad_clip=None, metropolis=metropolis
  )
  x0 = jax.random.uniform(jax.random.key(1), (4, 3, 3, 1), maxval=0.7)
  energy = lambda x, y=None: 50 * jnp.sum((x - 0.9) ** 2, axis=(1, 2, 3))  # pulls x to 0.9
  x, info = langevin.sample(jax.random.key(2), energy, x0, config, box=(x0 - 0.1, x0 + 0.1))
  assert float(jnp.abs(x - x0).max()) <= 0.1 + 1e-6
  assert float(jnp.mean(x - x0)) > 0.02  # the chains moved, up to the box
  assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # the data range still holds
  if metropolis:
    assert 0 < float(info.acceptance.mean()) < 1  # proposals outside the box were rejected


def test_return_trace_and_condition():
  config = langevin.LangevinConfig(
    num_steps=5, step_size=0.1, noise_scale=0.0, grad_clip=None, x_min=None, x_max=None
  )
  energy = lambda x, y: jnp.sum((x - y) ** 2, axis=1)
  y = jnp.array([[1.0], [-1.0]])
  x, info = langevin.sample(
    jax.random.key(0), energy, jnp.zeros((2, 1)), config, y=y, return_trace=True
  )
  assert info.trace.shape == (5, 2, 1)
  np.testing.assert_allclose(info.trace[-1], x)
  assert float(x[0, 0]) > 0 > float(x[1, 0])  # each chain moves towards its own condition


def test_adaptive_chains_stop_when_energy_settles():
  # Chains start at different distances from the minimum: far ones need more steps.
  config = langevin.LangevinConfig(
    step_size=0.05, noise_scale=0.0, grad_clip=None, x_min=None, x_max=None
  )
  energy = lambda x, y=None: 0.5 * jnp.sum(x**2, axis=1)
  x0 = jnp.array([[0.1], [10.0], [1000.0]])
  x, info = langevin.sample_adaptive(
    jax.random.key(0), energy, x0, config, tol=1e-3, max_steps=2000, window=5
  )
  steps = np.asarray(info.num_steps)
  assert steps[0] < steps[1] < steps[2] < 2000, steps
  np.testing.assert_array_less(np.abs(np.asarray(info.energy)), 0.05)
  capped = langevin.sample_adaptive(
    jax.random.key(0), energy, x0, config, tol=1e-12, max_steps=30, window=5
  )[1].num_steps
  np.testing.assert_array_equal(capped, 30)


@pytest.mark.parametrize(
  "field,value",
  [
    ("num_steps", -1),
    ("num_steps", 2.5),
    ("step_size", 0.0),
    ("noise_scale", -0.1),
    ("grad_clip", 0.0),
    ("clip_mode", "max"),
    ("x_min", 2.0),
  ],
)
def test_invalid_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    langevin.LangevinConfig(**{field: value})


def test_bad_inputs_raise_clear_errors():
  config = langevin.LangevinConfig(num_steps=2)
  energy = lambda x, y=None: jnp.sum(x, axis=1)
  with pytest.raises(ValueError, match=r"shape \[B, \.\.\.\]"):
    langevin.sample(jax.random.key(0), energy, jnp.zeros((4,)), config)
  with pytest.raises(ValueError, match="floating-point"):
    langevin.sample(jax.random.key(0), energy, jnp.zeros((4, 2), jnp.int32), config)
  with pytest.raises(ValueError, match="one energy per example"):
    langevin.sample(jax.random.key(0), lambda x, y=None: jnp.sum(x), jnp.zeros((4, 2)), config)
  with pytest.raises(ValueError, match="mask"):
    langevin.sample(jax.random.key(0), energy, jnp.zeros((4, 2)), config, mask=jnp.ones((3,), bool))


@pytest.mark.parametrize("metropolis", [False, True])
def test_an_ensemble_of_copies_is_the_single_energy_and_steps_take_turns(metropolis):
  config = langevin.LangevinConfig(
    num_steps=6, step_size=0.01, noise_scale=0.05, grad_clip=None, metropolis=metropolis
  )
  x0 = jax.random.uniform(jax.random.key(0), (4, 2))
  run = lambda fns: jax.jit(lambda x: langevin.sample_ensemble(jax.random.key(1), fns, x, config))
  single, _ = jax.jit(lambda x: langevin.sample(jax.random.key(1), gaussian_energy, x, config))(x0)
  copies, _ = run([gaussian_energy] * 3)(x0)
  np.testing.assert_array_equal(copies, single)
  # Two energies whose turns are told apart: step t descends energy t % 2 (no noise, no clip).
  pull = lambda target: lambda x, y=None: jnp.sum(jnp.square(x - target), axis=1) / 2
  plain = langevin.LangevinConfig(num_steps=3, step_size=0.5, noise_scale=0.0, grad_clip=None)
  x, _ = langevin.sample_ensemble(jax.random.key(2), [pull(0.0), pull(1.0)], x0, plain)
  expected = ((x0 * 0.5) * 0.5 + 0.5) * 0.5  # halfway to 0, to 1, to 0
  np.testing.assert_allclose(x, expected, rtol=1e-6)
  with pytest.raises(ValueError, match="at least one energy"):
    langevin.sample_ensemble(jax.random.key(2), [], x0, plain)
