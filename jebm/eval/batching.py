"""Applying a batch function to many examples in fixed-size chunks, with bounded memory."""

import itertools
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


def padded_size(n: int, batch_size: int) -> int:
  """The chunk size that holds n <= batch_size examples: the smallest of batch_size // 4,
  batch_size // 2 and batch_size that is >= n (at most three compilations, at most 4x waste)."""
  for size in (batch_size // 4, batch_size // 2):
    if n <= size:
      return size
  return batch_size


def map_host_chunks(fn: Callable, x, *, batch_size: int):
  """Applies a jitted ``fn`` to host chunks of at most ``batch_size`` examples of x [N, ...].

  A short chunk is zero-padded to ``padded_size`` (so at most three compilations serve every N)
  and its padding's outputs dropped; only one chunk is on the device at a time, so N can exceed
  device memory.

  Args:
    fn: ``fn(chunk [b, ...]) -> pytree of arrays [b, ...]``, jitted; with x a tuple of arrays,
      ``fn(*chunks)``.
    x: numpy-convertible inputs [N, ...], N >= 1, or a tuple of such arrays of the same N.
    batch_size: examples per chunk (>= 1).

  Returns:
    The pytree of ``fn``'s outputs for all of x, as numpy arrays [N, ...].
  """
  arrays = tuple(np.asarray(a) for a in x) if isinstance(x, tuple) else (np.asarray(x),)
  n = len(arrays[0]) if arrays[0].ndim else 0
  if n == 0 or batch_size < 1 or any(a.ndim < 1 or len(a) != n for a in arrays):
    raise ValueError(
      f"Need batches [N, ...] of one N >= 1 and batch_size >= 1, got shapes "
      f"{[a.shape for a in arrays]} and batch_size={batch_size}"
    )
  outputs = []
  for start in range(0, n, batch_size):
    size = min(batch_size, n - start)
    pad = padded_size(size, batch_size) - size
    chunks = [
      np.pad(a[start : start + size], ((0, pad),) + ((0, 0),) * (a.ndim - 1)) for a in arrays
    ]
    outputs.append(jax.tree.map(lambda o: np.asarray(o)[:size], fn(*chunks)))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def map_keyed_chunks(fn: Callable, rng_key: jax.Array, x, *, batch_size: int):
  """``map_host_chunks`` of a random ``fn(key, *chunks)``: chunk i gets the key
  fold_in(rng_key, i), so results depend only on the key and the chunking.

  Args:
    fn: ``fn(key, chunk [b, ...] or one chunk per array of x) -> pytree of arrays [b, ...]``,
      jitted.
    rng_key: PRNG key.
    x, batch_size: as in ``map_host_chunks``.
  """
  keys = (jax.random.fold_in(rng_key, i) for i in itertools.count())
  return map_host_chunks(lambda *chunks: fn(next(keys), *chunks), x, batch_size=batch_size)
