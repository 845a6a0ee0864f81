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
