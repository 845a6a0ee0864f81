"""Samples from a trained EBM: Langevin chains from noise or from the replay buffer.

This is what ``experiments/sample.py`` and the evaluators call, and what a notebook calls after
``jebm.checkpoint.restore``.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jebm import config as config_lib
from jebm import langevin, optim, parallel, replay
from jebm.energy import EnergyFn, from_model
from jebm.train import TrainState


def sampling_params(state: TrainState, config: config_lib.Config):
  """The parameters that sampling and evaluation use: the average of ``Config.ema_decay`` when it
  is on (``jebm.optim.params_ema``), else the current ones."""
  return optim.ema_params(state.opt_state) if config.ema_decay else state.params


def energy_fn(state: TrainState, config: config_lib.Config) -> EnergyFn:
  """The trained energy ``E(x [B, ...], y [B] or None) -> [B]`` of a state (with the parameter
  average when ``config.ema_decay`` > 0)."""
  return from_model(
    config_lib.build_model(config).apply, state.variables(sampling_params(state, config))
  )


def class_labels(config: config_lib.Config, num_per_class: int) -> Optional[jax.Array]:
  """[num_classes * num_per_class] class ids, each repeated num_per_class times (None if
  the model is unconditional)."""
  if not config.conditional:
    return None
  return jnp.repeat(jnp.arange(config.num_classes), num_per_class)


def chain_starts(
  rng_key: jax.Array,
  state: TrainState,
  config: config_lib.Config,
  num: int,
  init: str = "noise",
  labels: Optional[jax.Array] = None,
):
  """``num`` chain starts and their conditions.

  ``init="noise"``: uniform noise in [init_low, init_high), conditioned on ``labels``.
  ``init="replay"``: entries of the state's replay buffer, i.e. the model's persistent chains,
  conditioned on the labels they were sampled under (``labels`` must be None). The buffer must be
  in logical order, as ``jebm.checkpoint.restore`` gives it; a state taken from a data-parallel
  training loop needs ``jebm.parallel.to_logical_order`` first.

  Returns:
    (x0 [num, *example_shape] float32, y0 [num] or None for unconditional models).
  """
  fresh = replay.uniform_init(config.init_low, config.init_high)
  if init == "noise":
    if config.conditional and (labels is None or labels.shape[0] != num):
      raise ValueError(
        f"a conditional model needs labels of shape [{num}] to sample from noise, "
        f"got {None if labels is None else labels.shape}"
      )
    return fresh(rng_key, (num, *config.example_shape)), labels if config.conditional else None
  if init == "replay":
    if labels is not None:
      raise ValueError(
        "init='replay' continues the buffer's chains under their own labels; pass labels=None"
      )
    x0, y0, _ = replay.sample(rng_key, state.replay, num, init_fn=fresh, reinit_prob=0.0)
    return x0, y0 if config.conditional else None
  raise ValueError(f"init must be 'noise' or 'replay', got {init!r}")


def generate(
  rng_key: jax.Array,
  state: TrainState,
  config: config_lib.Config,
  *,
  num: int,
  num_steps: Optional[int] = None,
  init: str = "noise",
  labels: Optional[jax.Array] = None,
  sampler: Optional[langevin.LangevinConfig] = None,
):
  """Runs Langevin chains on the trained energy.

  Args:
    rng_key: PRNG key.
    state, config: a trained state and its config (e.g. from ``jebm.checkpoint.restore``).
    num: number of chains.
    num_steps: chain length (default ``config.eval_langevin_steps``).
    init: "noise" or "replay" (see ``chain_starts``).
    labels: [num] conditions for a conditional model started from noise.
    sampler: sampler settings overriding the run's (its num_steps is replaced by ``num_steps``).

  Returns:
    (samples [num, *example_shape] float32, their conditions [num] (None if unconditional)).
  """
  steps = config.eval_langevin_steps if num_steps is None else num_steps
  sampler = (
    config_lib.langevin_config(config, steps)
    if sampler is None
    else dataclasses.replace(sampler, num_steps=steps)
  )
  start_key, chain_key = jax.random.split(rng_key)
  x0, y0 = chain_starts(start_key, state, config, num, init, labels)
  return langevin.sample(chain_key, energy_fn(state, config), x0, sampler, y=y0)[0], y0


def generate_batched(
  rng_key: jax.Array,
  state: TrainState,
  config: config_lib.Config,
  *,
  num: int,
  labels: Optional[jax.Array] = None,
  batch_size: int = 250,
  **kwargs,
):
  """``generate`` in jitted chunks of at most ``batch_size`` chains (bounded memory).

  Returns (samples [num, *example_shape], conditions [num] or None); kwargs go to ``generate``.
  """
  if kwargs.get("init") == "replay" and parallel.num_shards(state.replay.images) > 1:
    raise ValueError(
      "init='replay' reads the replay buffer in logical order, but this state's buffer is split "
      "over devices: pass jebm.parallel.to_logical_order(state)"
    )
  run = jax.jit(generate, static_argnames=("config", "num", "num_steps", "init", "sampler"))
  samples, conditions = [], []
  for i, start in enumerate(range(0, num, batch_size)):
    n = min(batch_size, num - start)
    y = None if labels is None else labels[start : start + n]
    x, y = run(jax.random.fold_in(rng_key, i), state, config, num=n, labels=y, **kwargs)
    samples.append(x)
    conditions.append(y)
  return jnp.concatenate(samples), None if conditions[0] is None else jnp.concatenate(conditions)
