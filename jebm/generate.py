"""Samples from a trained EBM: Langevin chains from noise or from the replay buffer.

This is what ``experiments/sample.py`` and the evaluators call, and what a notebook calls after
``jebm.checkpoint.restore``.
"""

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from jebm import config as config_lib
from jebm import checkpoint, langevin, optim, parallel, replay
from jebm.energy import EnergyFn, from_model
from jebm.train import TrainState


def sampling_params(state: TrainState, config: config_lib.Config):
  """The parameters that sampling and evaluation use: the average of ``Config.ema_decay`` when it
  is on (``jebm.optim.params_ema``), else the current ones."""
  return optim.ema_params(state.opt_state) if config.ema_decay else state.params


def sampling_variables(state: TrainState, config: config_lib.Config):
  """The model variables sampling uses: ``sampling_params`` with the state's other variables."""
  return state.variables(sampling_params(state, config))


def energy_fn(state: TrainState, config: config_lib.Config) -> EnergyFn:
  """The trained energy ``E(x [B, ...], y [B] or None) -> [B]`` of a state (with the parameter
  average when ``config.ema_decay`` > 0)."""
  return from_model(config_lib.build_model(config).apply, sampling_variables(state, config))


def historical_ensemble(workdir: str, config: config_lib.Config, step: int, size: int):
  """The sampling variables of the ``size - 1`` checkpoints of ``workdir`` before ``step``
  (newest first), for ``generate(..., ensemble=...)``: with the state of ``step`` itself, the
  paper's historical ensemble of the last ``size`` checkpoints.

  Returns:
    {checkpoint step: variables}; ValueError when the workdir keeps fewer checkpoints.
  """
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"an ensemble needs an int size >= 1, got {size!r}")
  earlier = [s for s in checkpoint.steps(workdir) if s < step][::-1][: size - 1]
  if len(earlier) < size - 1:
    raise ValueError(
      f"an ensemble of {size} checkpoints up to step {step} needs {size - 1} earlier ones; "
      f"{workdir} keeps {checkpoint.steps(workdir)} (train with keep_checkpoints >= {size})"
    )
  return {s: sampling_variables(checkpoint.restore(workdir, s)[0], config) for s in earlier}


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
  ensemble: Sequence[Any] = (),
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
    ensemble: variables of other checkpoints of the run (``historical_ensemble``): the chains'
      steps then cycle through the energies of ``state`` and of these (the paper's historical
      ensemble, ``langevin.sample_ensemble``).

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
  if ensemble:
    apply = config_lib.build_model(config).apply
    fns = [energy_fn(state, config)] + [from_model(apply, v) for v in ensemble]
    return langevin.sample_ensemble(chain_key, fns, x0, sampler, y=y0)[0], y0
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
