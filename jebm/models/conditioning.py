"""Inputs of the energy networks: checks on x and y, and the conditional gain / bias layers.

A condition y is either int class ids [B] (one-hot encoded to [B, K]) or float condition
vectors [B, K] (continuous factors, e.g. dSprites position); both become a float matrix
``cond`` [B, K] that goes through the same layers. K is the model's ``num_classes``.

Conditioning follows the IGEBM "cond conv": a learned per-condition bias added to a layer's
input and a learned per-condition gain on its output, both linear in ``cond``:

    bias(cond) = b + cond @ W_b        gain(cond) = g + cond @ W_g

with b = 0, g = 1 and W_b = W_g = 0 at init. For a one-hot ``cond`` this is exactly a table of
per-class biases / gains; for a float ``cond`` it is a FiLM-style affine map. Without a
condition (``cond=None``) only the unconditional b / g remain (as in the IGEBM ResNet).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def check_rank(x: jax.Array, ndim: int, layout: str, model: str) -> None:
  """Raise ValueError unless ``x`` has rank ``ndim`` (``layout`` names the axes, e.g. "[B, H, W, C]")."""
  if x.ndim != ndim:
    raise ValueError(
      f"{model} expects x of shape {layout} (rank {ndim}), got shape {tuple(x.shape)}"
    )


def condition_vector(
  y: Any, num_classes: int | None, batch_size: int, model: str
) -> jax.Array | None:
  """Validate ``y`` against the model's ``num_classes`` and return ``cond`` [B, K] float32 or None.

  Args:
    y: None, int class ids [B] (values in [0, K); out-of-range ids give an all-zero row),
      or float condition vectors [B, K].
    num_classes: K, the number of classes / condition width; None for an unconditional model.
    batch_size: B, the leading size of x.
    model: model name used in error messages.

  Raises:
    ValueError: y given to an unconditional model, y missing for a conditional one, or y of
      the wrong rank, dtype, batch size or width.
  """
  if num_classes is None:
    if y is not None:
      raise ValueError(f"{model} is unconditional (num_classes=None) but y was given")
    return None
  if y is None:
    raise ValueError(
      f"{model} is conditional (num_classes={num_classes}) and needs y: int class ids [B] "
      f"or float condition vectors [B, {num_classes}]"
    )
  y = jnp.asarray(y)
  if jnp.issubdtype(y.dtype, jnp.integer):
    if y.shape != (batch_size,):
      raise ValueError(
        f"{model}: int class ids y must have shape ({batch_size},), got {tuple(y.shape)}"
      )
    return jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
  if jnp.issubdtype(y.dtype, jnp.floating):
    if y.shape != (batch_size, num_classes):
      raise ValueError(
        f"{model}: float condition vectors y must have shape ({batch_size}, {num_classes}), "
        f"got {tuple(y.shape)}"
      )
    return y.astype(jnp.float32)
  raise ValueError(
    f"{model}: y must be int class ids or float condition vectors, got dtype {y.dtype}"
  )


def _per_example(values: jax.Array, h: jax.Array) -> jax.Array:
  """Reshape [F] or [B, F] to broadcast against h [B, ..., F]."""
  if values.ndim == 1:
    return values
  return values.reshape(values.shape[:1] + (1,) * (h.ndim - 2) + values.shape[1:])


class CondBias(nn.Module):
  """Add a (conditional) per-channel bias: h [B, ..., F] -> h + b + cond @ W_b.

  ``cond`` is [B, K] or None (then only the unconditional bias b [F] is added).
  """

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, cond: jax.Array | None) -> jax.Array:
    """Return h plus the bias, same shape as h, in ``dtype``."""
    features = h.shape[-1]
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    if cond is not None:
      w = self.param(
        "cond_kernel", nn.initializers.zeros, (cond.shape[-1], features), self.param_dtype
      )
      bias = bias + cond.astype(self.param_dtype) @ w
    return h.astype(self.dtype) + _per_example(bias, h).astype(self.dtype)


class CondGain(nn.Module):
  """Multiply by a (conditional) per-channel gain: h [B, ..., F] -> h * (g + cond @ W_g).

  ``cond`` is [B, K] or None (then only the unconditional gain g [F], init 1, is applied).
  ``cond_init_std`` > 0 draws W_g from N(0, std^2) instead of zeros, so that classes differ from
  the start (the label-gated energy of Li et al. 2020, used for continual learning).
  """

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  cond_init_std: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array, cond: jax.Array | None) -> jax.Array:
    """Return h times the gain, same shape as h, in ``dtype``."""
    features = h.shape[-1]
    gain = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    if cond is not None:
      init = (
        nn.initializers.normal(self.cond_init_std) if self.cond_init_std else nn.initializers.zeros
      )
      w = self.param("cond_kernel", init, (cond.shape[-1], features), self.param_dtype)
      gain = gain + cond.astype(self.param_dtype) @ w
    return h.astype(self.dtype) * _per_example(gain, h).astype(self.dtype)
