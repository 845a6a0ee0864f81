"""Replay buffer: reinit fraction, ring order, uint8 round trip, jit-ability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import replay


def _full_buffer(capacity=64, shape=(4, 4, 1)):
  buffer = replay.init(capacity, shape)
  x = jax.random.uniform(jax.random.key(0), (capacity, *shape))
  return replay.push(buffer, x, jnp.arange(capacity)), x


def test_fresh_fraction_matches_reinit_prob():
  buffer, _ = _full_buffer()
  sample = jax.jit(lambda k: replay.sample(k, buffer, 1000, init_fn=replay.uniform_init())[2])
  indices = np.concatenate([np.asarray(sample(jax.random.key(i))) for i in range(20)])
  n, p = indices.size, 0.05
  fresh = np.mean(indices == -1)
  assert abs(fresh - p) < 4 * np.sqrt(p * (1 - p) / n), fresh  # 4-sigma binomial bound


def test_empty_buffer_gives_only_fresh_starts_with_given_labels():
  buffer = replay.init(16, (2,), dtype=jnp.float32)
  labels = jnp.arange(8)
  x0, y0, idx = replay.sample(
    jax.random.key(0), buffer, 8, init_fn=replay.uniform_init(-2.0, 2.0), fresh_labels=labels
  )
  assert np.all(np.asarray(idx) == -1)
  np.testing.assert_array_equal(y0, labels)
  assert float(x0.min()) >= -2.0 and float(x0.max()) < 2.0 and float(x0.std()) > 0.5


def test_ring_overwrites_oldest_first():
  buffer = replay.init(5, (1,), dtype=jnp.float32)
  for start in (0, 3, 6):  # pushes of 3: entries 0-2, 3-5 (wraps), 6-8 (wraps)
    values = jnp.arange(start, start + 3, dtype=jnp.float32)[:, None]
    buffer = replay.push(buffer, values, jnp.arange(start, start + 3))
  # 9 pushes into 5 slots: slot i holds the newest value ≡ i (mod 5): 5, 6, 7, 8, 4.
  np.testing.assert_array_equal(buffer.images[:, 0], [5, 6, 7, 8, 4])
  np.testing.assert_array_equal(buffer.labels, [5, 6, 7, 8, 4])
  assert int(buffer.size) == 5 and int(buffer.position) == 4


def test_replayed_entries_come_from_filled_part_with_their_labels():
  buffer = replay.push(
    replay.init(100, (1,), dtype=jnp.float32), jnp.ones((10, 1)) * 7, jnp.full((10,), 3)
  )
  x0, y0, idx = replay.sample(
    jax.random.key(1), buffer, 500, init_fn=replay.uniform_init(), reinit_prob=0.0
  )
  assert np.all(np.asarray(idx) < 10)
  np.testing.assert_array_equal(x0, 7.0)
  np.testing.assert_array_equal(y0, 3)


def test_uint8_round_trip_within_one_level():
  buffer, x = _full_buffer()
  x0, _, idx = replay.sample(
    jax.random.key(2), buffer, 256, init_fn=replay.uniform_init(), reinit_prob=0.0
  )
  error = np.abs(np.asarray(x0) - np.asarray(x)[np.asarray(idx)])
  assert buffer.images.dtype == jnp.uint8
  assert error.max() <= 1 / 255 + 1e-7
  assert 0.0 <= float(x0.min()) and float(x0.max()) <= 1.0


def test_push_errors_name_the_problem():
  buffer = replay.init(4, (2, 2, 1))
  with pytest.raises(ValueError, match="shape"):
    replay.push(buffer, jnp.zeros((2, 3, 3, 1)))
  with pytest.raises(ValueError, match="capacity"):
    replay.push(buffer, jnp.zeros((5, 2, 2, 1)))
  with pytest.raises(ValueError, match="capacity"):
    replay.init(0, (2,))


# --- One buffer over several devices ----------------------------------------------------------


def _sharded_push_fn(mesh):
  """Pushes a global batch into a buffer split over the mesh's devices (as the training step)."""
  from jax.sharding import PartitionSpec as P

  from jebm import parallel

  push = lambda b, x, y: replay.push(b, x, y, axis_name=parallel.AXIS)
  specs = parallel.buffer_specs()
  in_specs = (specs, P(parallel.AXIS), P(parallel.AXIS))
  return jax.jit(jax.shard_map(push, mesh=mesh, in_specs=in_specs, out_specs=specs))


@pytest.mark.parametrize("capacity,pushes", [(16, 3), (16, 5), (12, 7)])
def test_a_buffer_split_over_devices_is_one_ring_in_logical_order(capacity, pushes):
  from jebm import parallel

  mesh = parallel.make_mesh()
  assert mesh.size == 2, "conftest.py sets 2 emulated CPU devices"
  single = replay.init(capacity, (1,), dtype=jnp.float32)
  sharded = parallel.shard_buffer(single, mesh)
  push = _sharded_push_fn(mesh)
  for i in range(pushes):  # global batches of 4 distinct values: 0-3, 4-7, ... (wrapping)
    values = jnp.arange(4 * i, 4 * i + 4, dtype=jnp.float32)
    sharded = push(sharded, values[:, None], values.astype(jnp.int32))
    single = replay.push(single, values[:, None], values.astype(jnp.int32))
  assert parallel.num_shards(sharded.images) == 2
  logical = replay.to_logical_order(jax.device_get(sharded), 2)
  # The same ring as one device's: same size and position, the same entries, each global batch in
  # the same slots (within a batch, device d's share takes the slots ≡ d mod 2).
  assert (int(logical.size), int(logical.position)) == (int(single.size), int(single.position))
  np.testing.assert_array_equal(np.sort(logical.images[:, 0]), np.sort(single.images[:, 0]))
  np.testing.assert_array_equal(logical.images[:, 0] // 4, single.images[:, 0] // 4)
  np.testing.assert_array_equal(logical.labels, logical.images[:, 0].astype(np.int32))
  np.testing.assert_array_equal(
    replay.from_logical_order(logical, 2).images, jax.device_get(sharded).images
  )


def _sharded_draws(buffer, mesh, num, seed):
  """The stored values each device replays, drawn inside shard_map as the training step does."""
  from jax.sharding import PartitionSpec as P

  from jebm import parallel

  def draw(b, key):
    key = jax.random.fold_in(key, jax.lax.axis_index(parallel.AXIS))
    x0, _, _ = replay.sample(
      key, b, num, init_fn=lambda k, s: -jnp.ones(s), reinit_prob=0.0, axis_name=parallel.AXIS
    )
    return x0[:, 0]

  specs = (parallel.buffer_specs(), P())
  fn = jax.jit(jax.shard_map(draw, mesh=mesh, in_specs=specs, out_specs=P(parallel.AXIS)))
  return np.asarray(fn(buffer, jax.random.key(seed)))


@pytest.mark.parametrize("size", [5, 6, 16])
def test_every_entry_is_replayed_after_moving_between_device_counts(size):
  """A buffer filled on one device (odd sizes too) and split over two: every entry is drawn by
  some device, nothing else is; and back on one device, host draws reach all of them."""
  from jebm import parallel

  mesh = parallel.make_mesh()
  single = replay.push(
    replay.init(16, (1,), dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32)[:, None]
  )
  sharded = parallel.shard_buffer(single, mesh)
  drawn = np.concatenate([_sharded_draws(sharded, mesh, 200, seed) for seed in range(3)])
  assert set(drawn.tolist()) == set(range(size))  # no fresh starts (-1), no empty slots
  back = replay.to_logical_order(jax.device_get(sharded), 2)
  x0, _, idx = replay.sample(
    jax.random.key(0), back, 500, init_fn=replay.uniform_init(), reinit_prob=0.0
  )
  assert set(np.asarray(x0[:, 0]).tolist()) == set(range(size))
  np.testing.assert_array_equal(np.asarray(x0[:, 0]), np.asarray(idx))
