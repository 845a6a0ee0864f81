"""Replay buffer of past Langevin samples (IGEBM): chains restart from earlier samples, so that a
short chain per training step amounts to a long chain over training.

The buffer is a pytree of device arrays and every function is pure and jit-able: no host round
trips. Images are stored as uint8 (4x smaller than float32); float buffers serve vector data such
as 2-D toy densities, whose values are not confined to [0, 1].

One buffer, whatever the number of devices. ``size`` and ``position`` count logical slots of the
whole buffer. Run data-parallel (``axis_name`` given, inside ``shard_map``), the entries are split
over the n devices in an interleaved layout: logical slot g lives on device g % n, at row g // n of
that device's block of capacity / n rows. Every device pushes its share of each global batch into
its own block and replays from its own block, so no entry crosses devices during training, and
the filled slots are always the logical prefix [0, size). ``to_logical_order`` and
``from_logical_order`` convert between that layout and plain logical order (what checkpoints store
and what a single device uses), so a buffer written on 8 devices is read whole on 1.
"""

from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp


class ReplayBuffer(NamedTuple):
  """A ring buffer of chain states.

  Attributes:
    images: [capacity, *example_shape] uint8 (value round(255 x)) or float32 (x itself).
    labels: [capacity, *label_shape] conditions stored with each sample (class ids or vectors).
    size: int32 scalar, number of valid entries in the whole buffer (≤ capacity).
    position: int32 scalar, the logical slot the next push writes (the oldest entry once full).
  """

  images: jax.Array
  labels: jax.Array
  size: jax.Array
  position: jax.Array


def init(
  capacity: int,
  example_shape: Sequence[int],
  label_shape: Sequence[int] = (),
  *,
  dtype=jnp.uint8,
  label_dtype=jnp.int32,
) -> ReplayBuffer:
  """An empty buffer of ``capacity`` entries of shape ``example_shape``.

  Args:
    capacity: number of entries (> 0).
    example_shape: shape of one example, e.g. (28, 28, 1).
    label_shape: shape of one condition: () for class ids, (C,) for condition vectors.
    dtype: jnp.uint8 for images in [0, 1], or a float dtype for unbounded data.
    label_dtype: dtype of the stored conditions.
  """
  if not isinstance(capacity, int) or capacity <= 0:
    raise ValueError(f"replay capacity must be a positive int, got {capacity!r}")
  return ReplayBuffer(
    images=jnp.zeros((capacity, *example_shape), dtype),
    labels=jnp.zeros((capacity, *label_shape), label_dtype),
    size=jnp.zeros((), jnp.int32),
    position=jnp.zeros((), jnp.int32),
  )


def _shard(axis_name: Optional[str]):
  """(n, d): the number of buffer shards and this device's index (1, 0 outside shard_map)."""
  if axis_name is None:
    return 1, 0
  return jax.lax.axis_size(axis_name), jax.lax.axis_index(axis_name)


def _check_batch(buffer: ReplayBuffer, x: jax.Array, y: jax.Array):
  capacity, example_shape = buffer.images.shape[0], buffer.images.shape[1:]
  if x.shape[1:] != example_shape:
    raise ValueError(
      f"replay.push: examples of shape {x.shape[1:]} do not fit a buffer of "
      f"examples of shape {example_shape}"
    )
  if y.shape != (x.shape[0],) + buffer.labels.shape[1:]:
    raise ValueError(
      f"replay.push: labels of shape {y.shape} do not match {x.shape[0]} examples "
      f"with label shape {buffer.labels.shape[1:]}"
    )
  if x.shape[0] > capacity:
    raise ValueError(
      f"replay.push: batch of {x.shape[0]} exceeds buffer capacity {capacity} (per device when "
      "the buffer is split over devices)"
    )


def push(
  buffer: ReplayBuffer,
  x: jax.Array,
  y: Optional[jax.Array] = None,
  *,
  axis_name: Optional[str] = None,
) -> ReplayBuffer:
  """Writes a batch x [N, *example_shape] (float, in [0, 1] for uint8 buffers) with conditions
  y [N, *label_shape] (zeros if None) at the ring position, overwriting the oldest entries.

  With ``axis_name`` (inside ``shard_map`` over n devices) ``buffer`` is this device's block and
  x its share of a global batch of n * N examples; ``size`` and ``position`` advance by n * N.
  """
  if y is None:
    y = jnp.zeros((x.shape[0],) + buffer.labels.shape[1:], buffer.labels.dtype)
  _check_batch(buffer, x, y)
  n, d = _shard(axis_name)
  local_capacity = buffer.images.shape[0]
  capacity, global_batch = n * local_capacity, n * x.shape[0]
  # This device's slots among the logical slots position .. position + global_batch - 1 (mod
  # capacity) are those ≡ d (mod n): rows first, first + 1, ... of its block.
  first = (buffer.position - d + n - 1) // n
  index = (first + jnp.arange(x.shape[0])) % local_capacity
  stored = quantize(x) if buffer.images.dtype == jnp.uint8 else x.astype(buffer.images.dtype)
  return ReplayBuffer(
    images=buffer.images.at[index].set(stored),
    labels=buffer.labels.at[index].set(y.astype(buffer.labels.dtype)),
    size=jnp.minimum(buffer.size + global_batch, capacity),
    position=(buffer.position + global_batch) % capacity,
  )


def quantize(x: jax.Array) -> jax.Array:
  """Float x in [0, 1] -> uint8 round(255 x)."""
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def dequantize(rng_key: jax.Array, q: jax.Array) -> jax.Array:
  """uint8 q -> float32 (q + u - 1/2) / 255 with u ~ U(0, 1), clipped to [0, 1].

  Every value in the quantisation cell of q is equally likely, so |x - dequantize(quantize(x))| ≤
  1/255 and repeated round trips do not drift towards the cell centres.
  """
  u = jax.random.uniform(rng_key, q.shape, jnp.float32)
  return jnp.clip((q.astype(jnp.float32) + u - 0.5) / 255.0, 0.0, 1.0)


def sample(
  rng_key: jax.Array,
  buffer: ReplayBuffer,
  batch_size: int,
  *,
  init_fn: Callable[[jax.Array, tuple], jax.Array],
  reinit_prob: float = 0.05,
  fresh_labels: Optional[jax.Array] = None,
  axis_name: Optional[str] = None,
):
  """Draws chain starts: replayed entries, or fresh starts with probability ``reinit_prob``.

  Every start is fresh while the buffer (this device's block, with ``axis_name``) is empty.
  Replayed entries are drawn uniformly from the filled entries; with ``axis_name`` (inside
  ``shard_map``) from this device's block of an interleaved buffer (see the module docstring).

  Args:
    rng_key: PRNG key.
    buffer: the ReplayBuffer, in logical order (or this device's block, with ``axis_name``).
    batch_size: number of chain starts B.
    init_fn: ``init_fn(rng_key, shape) -> float32 array of that shape``, e.g. uniform noise.
    reinit_prob: probability that a start is fresh rather than replayed.
    fresh_labels: conditions [B, *label_shape] for fresh starts (e.g. the data batch's labels);
      zeros if None.
    axis_name: the device axis when called inside ``shard_map``.

  Returns:
    (x0 [B, *example_shape] float32, y0 [B, *label_shape], indices [B] int32: the row of
    ``buffer.images`` each start came from, -1 for fresh starts).
  """
  index_key, fresh_key, noise_key, dequant_key = jax.random.split(rng_key, 4)
  example_shape, label_shape = buffer.images.shape[1:], buffer.labels.shape[1:]
  if fresh_labels is None:
    fresh_labels = jnp.zeros((batch_size, *label_shape), buffer.labels.dtype)
  if fresh_labels.shape != (batch_size, *label_shape):
    raise ValueError(
      f"replay.sample: fresh_labels of shape {fresh_labels.shape}, expected "
      f"{(batch_size, *label_shape)}"
    )
  n, d = _shard(axis_name)
  filled = jnp.clip((buffer.size - d + n - 1) // n, 0, buffer.images.shape[0])  # in this block
  index = jax.random.randint(index_key, (batch_size,), 0, jnp.maximum(filled, 1))
  fresh = (jax.random.uniform(fresh_key, (batch_size,)) < reinit_prob) | (filled == 0)
  replayed = buffer.images[index]
  if replayed.dtype == jnp.uint8:
    replayed = dequantize(dequant_key, replayed)
  noise = init_fn(noise_key, (batch_size, *example_shape)).astype(jnp.float32)
  pick = fresh.reshape((batch_size,) + (1,) * len(example_shape))
  x0 = jnp.where(pick, noise, replayed.astype(jnp.float32))
  y0 = jnp.where(
    fresh.reshape((batch_size,) + (1,) * len(label_shape)),
    fresh_labels.astype(buffer.labels.dtype),
    buffer.labels[index],
  )
  return x0, y0, jnp.where(fresh, -1, index).astype(jnp.int32)


def _permute_rows(buffer: ReplayBuffer, blocks: int) -> ReplayBuffer:
  """Row r = i * (C / blocks) + j of images and labels moves to row j * blocks + i."""

  def permute(a):
    rows = a.shape[0] // blocks
    return a.reshape(blocks, rows, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)

  return buffer._replace(images=permute(buffer.images), labels=permute(buffer.labels))


def _check_shards(buffer: ReplayBuffer, num_shards: int):
  if num_shards < 1 or buffer.images.shape[0] % num_shards:
    raise ValueError(
      f"replay: capacity {buffer.images.shape[0]} cannot be split into {num_shards} shards"
    )


def to_logical_order(buffer: ReplayBuffer, num_shards: int) -> ReplayBuffer:
  """A whole buffer in the interleaved layout of ``num_shards`` devices -> logical order.

  Row d * (C / n) + k (device d's k-th row) holds logical slot k * n + d; the result has slot g at
  row g, so it can be sampled without ``axis_name`` or laid out for another device count.
  """
  _check_shards(buffer, num_shards)
  return _permute_rows(buffer, num_shards)


def from_logical_order(buffer: ReplayBuffer, num_shards: int) -> ReplayBuffer:
  """The inverse of ``to_logical_order``: logical order -> the layout of ``num_shards`` devices."""
  _check_shards(buffer, num_shards)
  return _permute_rows(buffer, buffer.images.shape[0] // num_shards)


def uniform_init(low: float = 0.0, high: float = 1.0) -> Callable[[jax.Array, tuple], jax.Array]:
  """``init_fn`` drawing fresh chain starts uniformly in [low, high)."""

  def init_fn(rng_key, shape):
    return jax.random.uniform(rng_key, shape, jnp.float32, low, high)

  return init_fn
