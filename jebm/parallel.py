"""Data parallelism with pmap semantics, written as ``jax.shard_map`` over a 1-D mesh axis "data".

One replica per device: each gets a slice of the global batch and its own shard of the replay
buffer, draws its own random numbers (``fold_in(key, axis_index)``), and gradients and metrics are
averaged with ``lax.pmean``. Parameters and optimiser state are replicated.

The replay buffer stays one buffer: on the mesh its entries are interleaved over the devices
(``jebm.replay``); ``to_logical_order`` turns a placed state's buffer into plain logical order,
which is what checkpoints store, and ``shard_state`` / ``shard_buffer`` place a state or buffer in
logical order onto the devices, so a run trained on n devices is restored, sampled and resumed on
any other number of devices.
"""

import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jebm import replay
from jebm.replay import ReplayBuffer
from jebm.train import TrainState

AXIS = "data"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> jax.sharding.Mesh:
  """A 1-D mesh named "data" over ``devices`` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def buffer_specs() -> ReplayBuffer:
  """PartitionSpecs of a ReplayBuffer: entries split across devices, size and position
  replicated."""
  return ReplayBuffer(images=P(AXIS), labels=P(AXIS), size=P(), position=P())


def state_specs() -> TrainState:
  """PartitionSpecs of a TrainState: replay entries split across devices, the rest replicated."""
  return TrainState(
    step=P(), params=P(), model_state=P(), opt_state=P(), replay=buffer_specs(), rng=P()
  )


def _shardings(mesh, specs, tree):
  """Broadcasts a prefix tree of PartitionSpecs to one NamedSharding per leaf of ``tree``."""
  return jax.tree.map(
    lambda spec, sub: jax.tree.map(lambda _: NamedSharding(mesh, spec), sub),
    specs,
    tree,
    is_leaf=lambda x: isinstance(x, P),
  )


def _check_divisible(n: int, mesh, what: str):
  if n % mesh.size:
    raise ValueError(f"{what} ({n}) must be divisible by the number of devices ({mesh.size})")


def state_shardings(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
  """NamedShardings for every leaf of a TrainState (or of its ``jax.eval_shape``)."""
  _check_divisible(state.replay.images.shape[0], mesh, "replay buffer capacity")
  return _shardings(mesh, state_specs(), state)


def shard_state(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
  """Places a TrainState (its buffer in logical order, as ``create_train_state`` and
  ``jebm.checkpoint.restore`` give it) on the mesh: replay buffer split over devices in their
  layout (``shard_buffer``), everything else replicated."""
  placed = jax.device_put(state.replace(replay=None), NamedSharding(mesh, P()))
  return placed.replace(replay=shard_buffer(state.replay, mesh))


def shard_batch(batch, mesh: jax.sharding.Mesh):
  """Places a host batch (dict of [B, ...] arrays, this process's share) split over the devices.

  With several processes, each passes its own slice; the result is the global batch.
  """
  sharding = NamedSharding(mesh, P(AXIS))
  for value in jax.tree.leaves(batch):
    _check_divisible(np.shape(value)[0] * jax.process_count(), mesh, "global batch size")
  return jax.tree.map(
    lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), batch
  )


def num_shards(array: jax.Array) -> int:
  """How many blocks of rows a placed array is split into (1 when unsplit or replicated)."""
  sharding = getattr(array, "sharding", None)
  if sharding is None or not array.shape:
    return 1
  return array.shape[0] // sharding.shard_shape(array.shape)[0]


@functools.lru_cache(maxsize=None)
def _reorder_fn(reorder, num: int, out_shardings):
  return jax.jit(lambda buffer: reorder(buffer, num), out_shardings=out_shardings)


def to_logical_order(state: TrainState) -> TrainState:
  """The state with its replay buffer in logical order (what checkpoints store, and what
  ``jebm.generate`` and ``replay.sample`` without ``axis_name`` read), replicated over the devices
  it was split over. A no-op for a buffer that is not split, so calling it twice is safe."""
  images = state.replay.images
  n = num_shards(images)
  if n == 1:
    return state
  replicated = NamedSharding(images.sharding.mesh, P())
  return state.replace(replay=_reorder_fn(replay.to_logical_order, n, replicated)(state.replay))


def shard_buffer(buffer: ReplayBuffer, mesh: jax.sharding.Mesh) -> ReplayBuffer:
  """Places a buffer in logical order (not split over devices) on the mesh, split over the
  devices in their interleaved layout (``jebm.replay``)."""
  if num_shards(buffer.images) != 1:
    raise ValueError(
      "shard_buffer: the buffer is already split over devices; jebm.parallel.to_logical_order "
      "gives its logical order"
    )
  _check_divisible(buffer.images.shape[0], mesh, "replay buffer capacity")
  replicated = jax.device_put(buffer, NamedSharding(mesh, P()))
  shardings = _shardings(mesh, buffer_specs(), buffer)
  return _reorder_fn(replay.from_logical_order, mesh.size, shardings)(replicated)


def data_parallel(
  train_step: Callable, mesh: jax.sharding.Mesh, *, donate: bool = True
) -> Callable:
  """Runs ``train_step`` as one replica per device, jitted.

  Args:
    train_step: built by ``jebm.train.make_train_step(..., axis_name="data")``, so that it averages
      gradients and metrics over the devices.
    mesh: from ``make_mesh``.
    donate: donate the input state's buffers to the output (halves peak memory).

  Returns:
    ``step(state, batch) -> (state, metrics)`` on a state from ``shard_state`` and a batch from
    ``shard_batch``; metrics are replicated scalars. The state's buffer stays in the devices'
    layout: ``to_logical_order`` before reading it on the host.
  """
  if getattr(train_step, "axis_name", AXIS) != AXIS:
    raise ValueError(
      f"train_step averages over axis {train_step.axis_name!r}, the mesh axis is {AXIS!r}"
    )
  sharded = jax.shard_map(
    train_step, mesh=mesh, in_specs=(state_specs(), P(AXIS)), out_specs=(state_specs(), P())
  )
  return jax.jit(sharded, donate_argnums=(0,) if donate else ())
