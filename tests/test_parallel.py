"""Data parallelism on 2 emulated CPU devices equals the single-device step."""

import jax
import numpy as np
import pytest

from jebm import langevin, optim, parallel, train
from jebm.models.conv import ConvEnergy


def _setup(noise_scale, axis_name=None):
  sampler = langevin.LangevinConfig(
    num_steps=4, step_size=10.0, noise_scale=noise_scale, grad_clip=0.01
  )
  # Every chain restarts "fresh" at the constant image 0.5, so (without Langevin noise) negatives
  # do not depend on which device or random key drew them.
  config = train.TrainConfig(
    langevin=sampler, buffer_capacity=16, reinit_prob=1.0, init_low=0.5, init_high=0.5
  )
  model, optimizer = ConvEnergy(features=(8, 16)), optim.igebm_adam(1e-3)
  state = train.create_train_state(jax.random.key(0), model, optimizer, config, (8, 8, 1))
  step = train.make_train_step(model, optimizer, config, axis_name=axis_name)
  return step, state


def _batches(n):
  rng = np.random.default_rng(0)
  # Float images skip the (per-device random) dequantisation of uint8 data.
  return [
    {"image": rng.uniform(size=(8, 8, 8, 1)).astype(np.float32), "label": np.zeros((8,), np.int32)}
    for _ in range(n)
  ]


def test_two_devices_match_one_device_on_the_same_global_batch():
  assert jax.device_count() == 2, "conftest.py sets 2 emulated CPU devices"
  single_step, single = _setup(noise_scale=0.0)
  single_step = jax.jit(single_step)
  mesh = parallel.make_mesh()
  dp_step, dp = _setup(noise_scale=0.0, axis_name=parallel.AXIS)
  dp_step, dp = parallel.data_parallel(dp_step, mesh), parallel.shard_state(dp, mesh)
  for batch in _batches(3):
    single, m1 = single_step(single, batch)
    dp, m2 = dp_step(dp, parallel.shard_batch(batch, mesh))
    jax.block_until_ready(dp)
  # Same maths, different reduction order (mean of 2 device means): float32 round-off only.
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(dp.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m1["energy_neg"], m2["energy_neg"], rtol=1e-3, atol=1e-4)
  assert dp.replay.images.sharding.spec == jax.sharding.PartitionSpec(parallel.AXIS)
  # One buffer: the same global fill and ring position as on one device.
  logical = parallel.to_logical_order(dp).replay
  assert (
    (int(logical.size), int(logical.position))
    == (16, 8)
    == (
      int(single.replay.size),
      int(single.replay.position),
    )
  )
  assert parallel.num_shards(logical.images) == 1


def test_devices_draw_different_random_numbers():
  mesh = parallel.make_mesh()
  step, state = _setup(noise_scale=0.05, axis_name=parallel.AXIS)
  state, _ = parallel.data_parallel(step, mesh)(
    parallel.shard_state(state, mesh), parallel.shard_batch(_batches(1)[0], mesh)
  )
  images = np.asarray(state.replay.images)  # shard 0 = rows 0-7, shard 1 = rows 8-15
  # Each shard pushed 4 negatives grown from the same start; only the noise can differ.
  assert not np.array_equal(images[:4], images[8:12])


def test_wrong_axis_and_indivisible_sizes_raise():
  mesh = parallel.make_mesh()
  step, state = _setup(noise_scale=0.0)  # built without axis_name: gradients would not be averaged
  with pytest.raises(ValueError, match="axis"):
    parallel.data_parallel(step, mesh)
  with pytest.raises(ValueError, match="divisible"):
    parallel.shard_batch({"image": np.zeros((3, 8, 8, 1), np.float32)}, mesh)
