"""Composing energy fns: every combinator returns an energy fn that goes straight into a sampler.

With p_i(x) ∝ exp(-E_i(x)):
- ``product``  (AND): E = Σ w_i E_i, a product of experts.
- ``mixture``  (OR):  E = -logsumexp_i(log w_i - E_i), a mixture of the (unnormalised) p_i.
- ``negation`` (AND NOT): E = E_a - w E_b, i.e. p_a / p_b^w.
- ``temperature``: E / t (t > 1 flattens, t < 1 sharpens).
- ``condition``: fixes the condition y of a conditional energy.
All shapes are as in ``jebm.energy``: x [B, ...] -> energies [B].
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jebm.energy import EnergyFn, check_energies


def _weights(n: int, weights: Optional[Sequence[float]]) -> jax.Array:
  if n == 0:
    raise ValueError("compose needs at least one energy fn")
  if weights is None:
    return jnp.ones((n,), jnp.float32)
  if len(weights) != n:
    raise ValueError(f"got {n} energy fns but {len(weights)} weights")
  return jnp.asarray(weights, jnp.float32)


def _stack(energy_fns, x, y):
  return jnp.stack([check_energies(f(x, y), x) for f in energy_fns])  # [N, B]


def product(*energy_fns: EnergyFn, weights: Optional[Sequence[float]] = None) -> EnergyFn:
  """AND: E(x) = Σ_i w_i E_i(x) (product of experts, p ∝ Π p_i^{w_i}); weights default to 1."""
  w = _weights(len(energy_fns), weights)

  def energy_fn(x, y=None):
    return jnp.tensordot(w, _stack(energy_fns, x, y), axes=1)

  return energy_fn


def mixture(*energy_fns: EnergyFn, weights: Optional[Sequence[float]] = None) -> EnergyFn:
  """OR: E(x) = -logsumexp_i(log w_i - E_i(x)), so p ∝ Σ_i w_i p_i; weights default to 1."""
  w = _weights(len(energy_fns), weights)
  if bool(jnp.any(w <= 0)):
    raise ValueError(f"mixture weights must be positive, got {w.tolist()}")

  def energy_fn(x, y=None):
    return -jax.nn.logsumexp(jnp.log(w)[:, None] - _stack(energy_fns, x, y), axis=0)

  return energy_fn


def negation(energy_fn: EnergyFn, other_fn: EnergyFn, weight: float = 1.0) -> EnergyFn:
  """AND NOT: E(x) = E(x) - weight * E_other(x), i.e. p ∝ p / p_other^weight."""
  return product(energy_fn, other_fn, weights=(1.0, -weight))


def temperature(energy_fn: EnergyFn, t: float) -> EnergyFn:
  """E(x) / t: p ∝ exp(-E/t). t must be positive."""
  if not t > 0:
    raise ValueError(f"temperature must be positive, got {t}")

  def tempered(x, y=None):
    return energy_fn(x, y) / t

  return tempered


def condition(energy_fn: EnergyFn, y: jax.Array, *, per_example: bool = False) -> EnergyFn:
  """Fixes the condition of a conditional energy: returns x -> E(x, y).

  Args:
    energy_fn: conditional energy fn ``(x [B, ...], y [B, ...]) -> [B]``.
    y: one condition shared by the whole batch (a class id, or a condition vector [C]),
      broadcast to [B, ...]; or, with ``per_example=True``, one condition per example [B, ...].
  """
  y = jnp.asarray(y)

  def conditioned(x, y_unused=None):
    if y_unused is not None:
      raise ValueError("condition(): this energy's condition is already fixed; do not pass y")
    y_batch = y if per_example else jnp.broadcast_to(y, (jnp.shape(x)[0],) + y.shape)
    return energy_fn(x, y_batch)

  return conditioned
