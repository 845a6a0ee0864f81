"""The parameter average (Config.ema_decay, jebm.optim.params_ema): its closed form, and that
sampling and evaluation use it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import get_preset
from jebm import generate, optim, train
from jebm import config as config_lib


def test_the_average_equals_its_closed_form_and_updates_pass_through():
  decay, lr = 0.9, 0.1
  optimizer = optax.chain(optax.sgd(lr), optim.params_ema(decay))
  params = {"w": jnp.array([1.0, -2.0])}
  state = optimizer.init(params)
  history = [params["w"]]
  for t in range(5):
    grads = {"w": jnp.array([t + 1.0, 0.5])}
    updates, state = optimizer.update(grads, state, params)
    np.testing.assert_allclose(updates["w"], -lr * grads["w"])  # unchanged by the average
    params = optax.apply_updates(params, updates)
    history.append(params["w"])
  # ema_T = d^T p_0 + (1 - d) sum_{t=1..T} d^(T-t) p_t
  expected = decay**5 * history[0] + sum(
    (1 - decay) * decay ** (5 - t) * history[t] for t in range(1, 6)
  )
  np.testing.assert_allclose(optim.ema_params(state)["w"], expected, rtol=1e-6)


def test_bad_decays_are_clear_errors():
  with pytest.raises(ValueError, match="decay in \\[0, 1\\), got 1.0"):
    optim.params_ema(1.0)
  with pytest.raises(ValueError, match="--ema_decay must be"):
    config_lib.Config(ema_decay=1.0)
  with pytest.raises(ValueError, match="--ema_decay must be"):
    config_lib.Config(ema_decay=-0.1)


def test_sampling_and_evaluation_use_the_average():
  # (That the average survives kills and resumes bit for bit is checked by test_reliability's
  # kill torture and damage fallbacks, whose runs have ema_decay 0.9.)
  config = dataclasses.replace(
    get_preset("default"),
    example_shape=(8, 8, 1),
    features=(4, 8),
    langevin_steps=2,
    batch_size=8,
    buffer_capacity=32,
    ema_decay=0.5,
  )
  model, optimizer = config_lib.build_model(config), config_lib.build_optimizer(config)
  step = jax.jit(train.make_train_step(model, optimizer, config_lib.train_config(config)))
  batch = {"image": np.full((8, 8, 8, 1), 128, np.uint8), "label": np.arange(8, dtype=np.int32)}
  state = config_lib.create_state(config)
  for _ in range(2):
    state, _ = step(state, batch)
  average = generate.sampling_params(state, config)
  assert average is optim.ema_params(state.opt_state)
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(average), jax.tree.leaves(state.params))
  )
  x, y = jnp.full((2, 8, 8, 1), 0.5), jnp.array([0, 1])
  by_hand = model.apply(state.variables(average), x, y)
  np.testing.assert_array_equal(generate.energy_fn(state, config)(x, y), by_hand)
  without = dataclasses.replace(config, ema_decay=0.0)
  assert generate.sampling_params(state, without) is state.params


def test_generating_with_an_ensemble_of_identical_checkpoints_is_the_single_model():
  config = dataclasses.replace(
    get_preset("default"), example_shape=(8, 8, 1), features=(4, 8), buffer_capacity=128
  )
  state = config_lib.create_state(config)
  labels = jnp.arange(6) % 10
  run = jax.jit(
    lambda ensemble: generate.generate(
      jax.random.key(3), state, config, num=6, num_steps=2, labels=labels, ensemble=ensemble
    )[0]
  )
  variables = generate.sampling_variables(state, config)
  np.testing.assert_array_equal(run((variables, variables)), run(()))
  other = state.variables(jax.tree.map(lambda p: p * 1.5, state.params))
  assert not np.array_equal(run((other,)), run(()))
