"""Checkpoints: a thin facade over orbax's CheckpointManager.

A checkpoint is the whole TrainState (params, model state, optimiser state, replay buffer, rng,
step) plus the run's Config as JSON, under ``<workdir>/checkpoints/<step>``. Orbax writes each one
into a temporary folder and renames it when complete, so a run killed mid-write leaves the previous
checkpoint intact, and restoring never sees a partial one.

Checkpoints do not depend on the number of devices: the replay buffer is saved in logical order
(``jebm.parallel.to_logical_order``), and ``restore`` places every array where it is asked to (one
device by default), so a run trained on 8 accelerators is restored, sampled, evaluated and resumed
on a laptop, and the other way round.
"""

import dataclasses
import os
from typing import Optional, Tuple

import jax
import orbax.checkpoint as ocp

from jebm import config as config_lib
from jebm import parallel
from jebm.train import TrainState


def _directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  """An orbax CheckpointManager for ``<workdir>/checkpoints`` keeping the ``keep`` newest."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(_directory(workdir), options=options, item_names=("state", "config"))


def _to_saveable(state: TrainState) -> TrainState:
  return state.replace(rng=jax.random.key_data(state.rng))  # orbax stores raw uint32 key data


def save(mngr: ocp.CheckpointManager, state: TrainState, config: config_lib.Config) -> None:
  """Saves ``state`` (placed anywhere, its buffer in logical order once saved) and ``config`` at
  step ``state.step`` (asynchronously: call ``mngr.wait_until_finished()`` before exiting)."""
  mngr.save(
    int(state.step),
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(_to_saveable(parallel.to_logical_order(state))),
      config=ocp.args.JsonSave(dataclasses.asdict(config)),
    ),
  )


def latest_step(workdir: str) -> Optional[int]:
  """The newest complete checkpoint's step, or None when there is none."""
  if not os.path.isdir(_directory(workdir)):
    return None
  return ocp.CheckpointManager(_directory(workdir)).latest_step()


def load_config(workdir: str, step: Optional[int] = None) -> config_lib.Config:
  """The Config saved with a checkpoint (the newest when ``step`` is None)."""
  step = _existing_step(workdir, step)
  with manager(workdir) as mngr:
    restored = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return config_lib.Config.from_dict(restored.config)


def _existing_step(workdir: str, step: Optional[int]) -> int:
  steps = (
    [] if latest_step(workdir) is None else ocp.CheckpointManager(_directory(workdir)).all_steps()
  )
  if not steps:
    raise FileNotFoundError(
      f"no checkpoint in {_directory(workdir)}: train one first with "
      f"`python -m experiments.train --workdir={workdir}`"
    )
  if step is None:
    return max(steps)
  if step not in steps:
    raise FileNotFoundError(
      f"no checkpoint for step {step} in {_directory(workdir)}; available: {sorted(steps)}"
    )
  return step


def restore(
  workdir: str, step: Optional[int] = None, *, mesh: Optional[jax.sharding.Mesh] = None
) -> Tuple[TrainState, config_lib.Config]:
  """Restores ``(train_state, config)`` from ``workdir`` (the newest checkpoint by default).

  Works in a notebook with nothing but the workdir, on any number of devices: the saved config
  rebuilds the state's structure. By default everything lands on this process's first device, the
  replay buffer in logical order (what ``jebm.generate`` and ``jebm.replay.sample`` read). With a
  ``mesh`` (``jebm.parallel.make_mesh``) the state is placed for data-parallel training, as
  ``jebm.parallel.shard_state`` places it.
  """
  step = _existing_step(workdir, step)
  config = load_config(workdir, step)
  target = jax.eval_shape(lambda: _to_saveable(config_lib.create_state(config)))
  if mesh is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  else:
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), target)
  with manager(workdir) as mngr:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  state = restored.state.replace(rng=jax.random.wrap_key_data(restored.state.rng))
  return (state if mesh is None else parallel.shard_state(state, mesh)), config
