"""Energy functions: the one abstraction every other part of jebm builds on.

An energy fn maps a batch ``x`` of shape [B, ...] (and an optional condition ``y`` of shape
[B, ...]) to energies of shape [B]. The model is p(x) ∝ exp(-E(x)): low energy means likely.
"""

from typing import Any, Callable, Optional, Protocol

import jax
import jax.numpy as jnp

from jebm import ops


class EnergyFn(Protocol):
  """``energy_fn(x, y=None) -> energies``: x [B, ...], y [B, ...] or None, energies [B]."""

  def __call__(self, x: jax.Array, y: Optional[jax.Array] = None) -> jax.Array: ...


def check_energies(energies: jax.Array, x: jax.Array, name: str = "energy_fn") -> jax.Array:
  """Raises ValueError unless ``energies`` has shape [B] for ``x`` of shape [B, ...].

  Shapes are static under jit, so this check costs nothing at run time.
  """
  if jnp.ndim(x) < 1:
    raise ValueError(f"{name}: x must have a leading batch axis [B, ...], got shape {jnp.shape(x)}")
  expected = (jnp.shape(x)[0],)
  if jnp.shape(energies) != expected:
    raise ValueError(
      f"{name} must return one energy per example, shape {expected} for x of shape "
      f"{jnp.shape(x)}; it returned shape {jnp.shape(energies)}"
    )
  return energies


def from_model(apply_fn: Callable[..., jax.Array], variables: Any) -> EnergyFn:
  """Binds a Flax model's ``apply_fn`` and its ``variables`` into an energy fn.

  Args:
    apply_fn: ``apply_fn(variables, x, y)`` returning energies [B], e.g. ``model.apply`` of a
      ``jebm.models`` module (which never updates spectral-norm state unless asked to).
    variables: the model's variables, e.g. ``{"params": ..., "spectral": ...}``.

  Returns:
    ``energy_fn(x, y=None) -> [B]``, a pure function of x and y that samplers can differentiate
    (on the CPU with the fast convolution gradients of ``jebm.ops.with_fast_convs``).
  """

  def energy_fn(x, y=None):
    return check_energies(apply_fn(variables, x, y), x, name="model energy")

  return fast_on_cpu(energy_fn)


def fast_on_cpu(energy_fn: EnergyFn) -> EnergyFn:
  """``jebm.ops.with_fast_convs(energy_fn)`` on the CPU backend, ``energy_fn`` elsewhere (where
  XLA's own convolution gradients were not measured to be slower)."""
  return ops.with_fast_convs(energy_fn) if jax.default_backend() == "cpu" else energy_fn


def energy_and_grad(energy_fn: EnergyFn, x: jax.Array, y: Optional[jax.Array] = None):
  """Energies [B] and their gradients with respect to x, [B, ...].

  Examples do not interact in an energy fn, so the gradient of the summed energy is the batch of
  per-example gradients. On the CPU the energy's convolutions get jebm's fast input gradient
  (``jebm.ops.with_fast_convs``), whatever layers the model uses.
  """
  energy_fn = fast_on_cpu(energy_fn)

  def total(x_):
    e = check_energies(energy_fn(x_, y), x_)
    return jnp.sum(e), e

  grad, energies = jax.grad(total, has_aux=True)(x)
  return energies, grad


def tile_classes(x: jax.Array, num_classes: int):
  """Every example under every class id: x [B, ...] -> (x tiled [K * B, ...], ids int32 [K * B]),
  class-major (entry k * B + b is x[b] under class k)."""
  b = x.shape[0]
  tiled = jnp.broadcast_to(x[None], (num_classes,) + x.shape).reshape(
    (num_classes * b,) + x.shape[1:]
  )
  return tiled, jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), b)


def class_energy_table(energy_fn: EnergyFn, x: jax.Array, num_classes: int) -> jax.Array:
  """E(x, y) of every example under every class id: x [B, ...] -> [B, K].

  One ``energy_fn`` call on K * B examples (``tile_classes``); jit-able and differentiable.
  """
  tiled, ids = tile_classes(x, num_classes)
  return check_energies(energy_fn(tiled, ids), tiled).reshape(num_classes, x.shape[0]).T
