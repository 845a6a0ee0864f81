"""Applying a batch function to many examples in fixed-size chunks, with bounded memory."""

from typing import Callable

import jax
import jax.numpy as jnp


def map_batches(fn: Callable, x: jax.Array, *, batch_size: int):
  """Applies ``fn`` to x [N, ...] in chunks of ``batch_size`` examples (one ``lax.map``).

  The last chunk is padded with zeros and the padding's outputs dropped, so ``fn`` must treat
  examples independently. Jit-able (N and batch_size are static); only one chunk's activations
  live at a time.

  Args:
    fn: ``fn(chunk [b, ...]) -> pytree of arrays [b, ...]``.
    x: inputs [N, ...], N >= 1.
    batch_size: examples per chunk (capped at N).

  Returns:
    The pytree of ``fn``'s outputs for all of x, each [N, ...].
  """
  x = jnp.asarray(x)
  n = x.shape[0]
  if n == 0 or batch_size < 1:
    raise ValueError(
      f"map_batches needs N >= 1 examples and batch_size >= 1, got N={n}, batch_size={batch_size}"
    )
  b = min(int(batch_size), n)
  pad = (-n) % b
  chunks = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape((-1, b) + x.shape[1:])
  out = jax.lax.map(fn, chunks)
  return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:n], out)
