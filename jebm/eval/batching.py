"""Applying a batch function to many examples in fixed-size chunks, with bounded memory."""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

IMAGES_PER_CALL = 500  # default chunk of the judge and of user feature networks


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


def map_host_chunks(fn: Callable, x, *, batch_size: int):
  """Applies a jitted ``fn`` to host chunks of exactly ``batch_size`` examples of x [N, ...].

  The last chunk is zero-padded (so one compilation serves every N) and its padding's outputs
  dropped; only one chunk is on the device at a time, so N can exceed device memory.

  Args:
    fn: ``fn(chunk [batch_size, ...]) -> pytree of arrays [batch_size, ...]``, jitted.
    x: numpy-convertible inputs [N, ...], N >= 1.
    batch_size: examples per chunk (>= 1).

  Returns:
    The pytree of ``fn``'s outputs for all of x, as numpy arrays [N, ...].
  """
  x = np.asarray(x)
  if x.ndim < 1 or len(x) == 0 or batch_size < 1:
    raise ValueError(
      f"Need a batch [N, ...] with N >= 1 and batch_size >= 1, got shape {x.shape} and "
      f"batch_size={batch_size}"
    )
  outputs = []
  for start in range(0, len(x), batch_size):
    chunk = x[start : start + batch_size]
    padded = np.pad(chunk, ((0, batch_size - len(chunk)),) + ((0, 0),) * (chunk.ndim - 1))
    outputs.append(jax.tree.map(lambda o, n=len(chunk): np.asarray(o)[:n], fn(padded)))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
