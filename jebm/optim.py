"""The IGEBM optimiser: Adam without momentum whose gradients are first clipped per element to a
few running standard deviations (a guard against the occasional huge CD gradient); and an
exponential moving average of the parameters kept in the optimiser state."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ClipBySecondMomentState(NamedTuple):
  """Step count and running mean of squared (clipped) gradients, like Adam's ν."""

  count: jax.Array
  nu: optax.Params


def clip_by_second_moment(
  b2: float = 0.999, clip_std: float = 3.0, clip_offset: float = 0.1, eps: float = 1e-8
) -> optax.GradientTransformation:
  """Clips each gradient element to ±(clip_std * sqrt(ν̂) + clip_offset).

  ν̂ is the bias-corrected running mean of squared clipped gradients before this step (Adam's
  second moment with decay b2), so the first step clips to ±clip_offset.
  """

  def init_fn(params):
    return ClipBySecondMomentState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    correction = jnp.maximum(1.0 - b2 ** state.count.astype(jnp.float32), eps)
    bound = lambda nu: clip_std * jnp.sqrt(nu / correction) + clip_offset
    clipped = jax.tree.map(lambda g, nu: jnp.clip(g, -bound(nu), bound(nu)), updates, state.nu)
    nu = jax.tree.map(lambda nu, g: b2 * nu + (1 - b2) * jnp.square(g), state.nu, clipped)
    return clipped, ClipBySecondMomentState(state.count + 1, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def igebm_adam(
  learning_rate: optax.ScalarOrSchedule = 3e-4,
  b1: float = 0.0,
  b2: float = 0.999,
  clip_std: float = 3.0,
  clip_offset: float = 0.1,
  eps: float = 1e-8,
) -> optax.GradientTransformation:
  """The paper's optimiser as an optax chain: per-element clip to clip_std*sqrt(ν̂)+clip_offset,
  then Adam(b1, b2) scaled by the learning rate."""
  return optax.chain(
    clip_by_second_moment(b2, clip_std, clip_offset, eps),
    optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
    optax.scale_by_learning_rate(learning_rate),
  )


class ParamsEmaState(NamedTuple):
  """The exponential moving average of the parameters (a pytree like them)."""

  params_ema: Any


def params_ema(decay: float) -> optax.GradientTransformation:
  """Keeps ema <- decay * ema + (1 - decay) * new params in the optimiser state, starting from the
  initial parameters; updates pass through unchanged. Must be the last transformation of a chain
  (it sees the final updates). Read it with ``ema_params(opt_state)``."""
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"params_ema needs a decay in [0, 1), got {decay}")

  def init_fn(params):
    return ParamsEmaState(jax.tree.map(jnp.asarray, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("params_ema needs the params: call optimizer.update(grads, state, params)")
    new = optax.apply_updates(params, updates)
    average = lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype)
    return updates, ParamsEmaState(jax.tree.map(average, state.params_ema, new))

  return optax.GradientTransformation(init_fn, update_fn)


def ema_params(opt_state):
  """The parameter average that ``params_ema`` keeps in ``opt_state``."""
  return optax.tree_utils.tree_get(opt_state, "params_ema")
