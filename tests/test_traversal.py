"""Latent traversal: Hessian directions with known answers, through a jebm model, and the
traversal grid refined by Langevin."""

import jax
import jax.numpy as jnp
import numpy as np

from jebm import traversal
from jebm.energy import from_model
from jebm.langevin import LangevinConfig
from jebm.models import ConvEnergy

CURVATURES = jnp.array([1.0, 5.0, 3.0, 0.5])


def quadratic(x, y=None):
  """E(x) = 0.5 sum_i a_i x_i^2 over x [B, 2, 2, 1]: Hessian diag(a)."""
  return 0.5 * jnp.sum(CURVATURES * x.reshape(x.shape[0], -1) ** 2, axis=1)


def test_hessian_directions_of_a_quadratic_are_its_axes():
  values, directions = traversal.hessian_directions(quadratic, jnp.ones((2, 2, 1)), k=2)
  np.testing.assert_allclose(values, [5.0, 3.0], rtol=1e-6)
  assert directions.shape == (2, 2, 2, 1)
  np.testing.assert_allclose(np.abs(directions.reshape(2, 4)), np.eye(4)[[1, 2]], atol=1e-6)
  values, directions = traversal.hessian_directions(
    quadratic, jnp.ones((2, 2, 1)), k=2, largest=False
  )
  np.testing.assert_allclose(values, [0.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(np.abs(directions.reshape(2, 4)), np.eye(4)[[3, 0]], atol=1e-6)


def test_traverse_moves_along_directions_and_langevin_lowers_the_energy():
  x = jnp.zeros((2, 2, 1))
  _, directions = traversal.hessian_directions(quadratic, x, k=2)
  distances = (-1.0, 0.0, 2.0)
  still = LangevinConfig(num_steps=0, x_min=None, x_max=None)
  moved = traversal.traverse(jax.random.key(0), quadratic, x, directions, distances, still)
  assert moved.shape == (2, 3, 2, 2, 1)
  np.testing.assert_allclose(moved[1, 2], 2.0 * directions[1], atol=1e-6)
  descend = LangevinConfig(
    num_steps=5, step_size=0.05, noise_scale=0.0, grad_clip=None, x_min=None, x_max=None
  )
  refined = traversal.traverse(jax.random.key(0), quadratic, x, directions, distances, descend)
  before, after = quadratic(moved.reshape(6, 2, 2, 1)), quadratic(refined.reshape(6, 2, 2, 1))
  off_minimum = np.asarray(before) > 0
  assert np.all(np.asarray(after)[off_minimum] < np.asarray(before)[off_minimum])


def test_hessian_directions_through_a_conditional_jebm_model():
  model = ConvEnergy(features=(4, 8), num_classes=3)
  x = jax.random.uniform(jax.random.key(1), (8, 8, 1))
  variables = model.init(jax.random.key(0), x[None], jnp.zeros((1,), jnp.int32))
  energy = from_model(model.apply, variables)
  values, directions = traversal.hessian_directions(energy, x, jnp.array(2), k=3)
  assert np.all(np.diff(np.asarray(values)) <= 0)
  flat = directions.reshape(3, -1)
  np.testing.assert_allclose(flat @ flat.T, np.eye(3), atol=1e-4)
  one = lambda xi: energy(xi[None], jnp.array([2]))[0]
  for value, direction in zip(values, directions):  # Rayleigh quotient by a Hessian-vector product
    hvp = jax.jvp(jax.grad(one), (x,), (direction,))[1]
    np.testing.assert_allclose(jnp.vdot(direction, hvp), value, rtol=1e-3, atol=1e-5)
