"""Checkpoints: a thin facade over orbax's CheckpointManager.

A checkpoint is the whole TrainState (params, model state, optimiser state, replay buffer, rng,
step) plus the run's Config as JSON, under ``<workdir>/checkpoints/<step>``. Orbax writes each one
into a temporary folder (``<step>.orbax-checkpoint-tmp``) and renames it when complete, so a run
killed mid-write leaves the previous checkpoint intact, and restoring never sees a partial one.
Readers ignore those temporary folders; the next writer (``manager``) deletes them.

Checkpoints do not depend on the number of devices: the replay buffer is saved in logical order
(``jebm.parallel.to_logical_order``), and ``restore`` places every array where it is asked to (one
device by default), so a run trained on 8 accelerators is restored, sampled, evaluated and resumed
on a laptop, and the other way round.

Damaged checkpoints (a file deleted, truncated or garbled after the write, a copy cut short, an
emptied folder): ``restore`` and ``load_config`` read the newest checkpoint that reads back whole,
with a warning naming each one they skip, and raise ``CorruptCheckpointError`` (a ValueError)
naming the folder and what to do when none does, or when the step asked for is damaged (no
fallback then). A checkpoint reads back whole when orbax restores its items without error (a
missing, short or garbled file that the restore reads; tensorstore checks its b-tree nodes), every
array equals what was saved by its CRC-32 (saved in orbax's per-step custom metadata), and every
float array is finite. Damage to bytes that a restore does not read (orbax's OCDBT store keeps
stale b-tree versions) changes nothing and is not reported. Not detected: garbled values that
still decode to finite numbers in checkpoints saved before the checksums, in arrays that this
process cannot read whole (sharded across processes), or in the config where it still parses as a
valid config. ``load_config`` checks only the config. Errors of the device (out of memory) and a
config from a newer jebm (``ConfigVersionError``) are raised as they are, not taken for damage.

Readers move nothing. The writer (``save``) moves a damaged checkpoint aside, one atomic rename to
``<workdir>/corrupt_checkpoints/<step>_<time>``, when it saves that step again (a run that resumed
from an older checkpoint re-trains the steps up to it); nothing is deleted.
"""

import json
import logging
import os
import sys
import time
import types
import zlib
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jebm import config as config_lib
from jebm import parallel
from jebm.train import TrainState

T = TypeVar("T")
_ITEMS = ("state", "config")
# Key of the arrays' CRC-32s (by key path) in the step's orbax custom metadata (its
# _CHECKPOINT_METADATA file).
_CHECKSUMS = "jebm_crc32"
_STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's per-step metadata file (JSON)
CORRUPT_DIR = "corrupt_checkpoints"


class CorruptCheckpointError(ValueError):
  """A checkpoint that does not read back as it was saved."""


def _directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _step_dir(workdir: str, step: int) -> str:
  return os.path.join(_directory(workdir), str(step))


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  """The writer's orbax CheckpointManager for ``<workdir>/checkpoints``, keeping the ``keep``
  newest checkpoints; deletes the temporary folders of writes that were cut short. One writer per
  workdir; readers use ``restore`` and ``load_config``."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, create=True, cleanup_tmp_directories=True, lightweight_initialize=True
  )
  return ocp.CheckpointManager(_directory(workdir), options=options, item_names=_ITEMS)


def _reader(workdir: str) -> ocp.CheckpointManager:
  # Creates nothing and reads no step's metadata when created, so a damaged step cannot stop it.
  options = ocp.CheckpointManagerOptions(create=False, lightweight_initialize=True)
  return ocp.CheckpointManager(_directory(workdir), options=options, item_names=_ITEMS)


def _to_saveable(state: TrainState) -> TrainState:
  return state.replace(rng=jax.random.key_data(state.rng))  # orbax stores raw uint32 key data


def _host_arrays(tree) -> Dict[str, np.ndarray]:
  """The arrays of ``tree`` that this process can read whole, on the host, by key path."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  readable = {
    jax.tree_util.keystr(path): leaf
    for path, leaf in leaves
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable or leaf.is_fully_replicated
  }
  return {k: np.asarray(v) for k, v in jax.device_get(readable).items()}


def _crc32(array: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _move_aside(workdir: str, step: int, why: str) -> str:
  """Renames ``<workdir>/checkpoints/<step>`` to ``<workdir>/corrupt_checkpoints/<step>_<time>``
  (one atomic rename) and logs it; returns the new path."""
  folder = os.path.join(os.path.abspath(workdir), CORRUPT_DIR)
  os.makedirs(folder, exist_ok=True)
  stamp = time.strftime("%Y%m%d-%H%M%S")
  target, n = os.path.join(folder, f"{step}_{stamp}"), 1
  while os.path.exists(target):
    target, n = os.path.join(folder, f"{step}_{stamp}.{n}"), n + 1
  os.rename(_step_dir(workdir, step), target)
  logging.warning("Moved checkpoint %s aside to %s: %s", _step_dir(workdir, step), target, why)
  return target


def _move_aside_newer(mngr: ocp.CheckpointManager, step: int) -> None:
  """Moves aside the checkpoints of ``step`` or later before the writer saves ``step``: the run
  resumed from an older checkpoint, so ``restore`` found these damaged."""
  workdir = os.path.dirname(os.fspath(mngr.directory))
  newer = [s for s in steps(workdir) if s >= step]
  several = jax.process_count() > 1
  # Process 0's listing decides for all: a process listing after its rename would skip the barrier.
  if not (multihost_utils.broadcast_one_to_all(np.bool_(bool(newer))) if several else newer):
    return
  mngr.wait_until_finished()
  if jax.process_index() == 0:
    for s in newer:
      why = f"the run resumed from an older checkpoint (restoring it failed) and saves step {step}"
      _move_aside(workdir, s, why)
  if several:
    multihost_utils.sync_global_devices("jebm.checkpoint: moved aside")
  mngr.reload()


def save(mngr: ocp.CheckpointManager, state: TrainState, config: config_lib.Config) -> None:
  """Saves ``state`` (placed anywhere, its buffer in logical order once saved) and ``config`` at
  step ``state.step`` (asynchronously: call ``mngr.wait_until_finished()`` before exiting), with a
  CRC-32 of every array that ``restore`` checks.

  Checkpoints of this step or later are moved aside to ``<workdir>/corrupt_checkpoints`` first:
  the run resumed from an older one, so ``restore`` skipped them as damaged.
  """
  step = int(state.step)
  _move_aside_newer(mngr, step)
  saveable = _to_saveable(parallel.to_logical_order(state))
  checksums = {k: _crc32(a) for k, a in _host_arrays(saveable).items()}
  saved = mngr.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(saveable),
      config=ocp.args.JsonSave(config_lib.config_to_dict(config)),
    ),
    custom_metadata={_CHECKSUMS: checksums},
  )
  if not saved:
    raise RuntimeError(f"orbax declined to save step {step} in {mngr.directory}")


def steps(workdir: str) -> List[int]:
  """The steps of the checkpoints in ``workdir``, oldest first (the folders orbax finished
  writing; not checked for damage)."""
  directory = _directory(workdir)
  if not os.path.isdir(directory):
    return []
  names = os.listdir(directory)
  return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def latest_step(workdir: str) -> Optional[int]:
  """The newest checkpoint's step, or None when there is none (``restore`` may fall back to an
  older one if it is damaged)."""
  return max(steps(workdir), default=None)


def _is_leftover_report(unraisable) -> bool:
  # Collected coroutines of orbax's reads raise from their `except BaseException`; tensorstore's
  # callbacks for reads still in flight after orbax gave up find orbax's event loop closed.
  if isinstance(unraisable.object, types.CoroutineType):
    return "/orbax/" in unraisable.object.cr_code.co_filename
  error = unraisable.exc_value
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _not_an_orbax_task_report(record: logging.LogRecord) -> bool:
  # asyncio logs "Task (or Future) exception was never retrieved" for orbax's collected reads.
  message = record.getMessage()
  return not (record.name == "asyncio" and ("/orbax/" in message or "tensorstore_spec" in message))


def _drop_orbax_leftover_reports() -> None:
  """Makes this process drop the tracebacks that the leftover reads of a failed orbax restore
  print from other threads, until the process exits (the CorruptCheckpointError says what went
  wrong). Only those; installed once."""
  hook = sys.unraisablehook
  if getattr(hook, "drops_orbax_leftovers", False):
    return

  def on_unraisable(unraisable):
    if not _is_leftover_report(unraisable):
      hook(unraisable)

  on_unraisable.drops_orbax_leftovers = True
  sys.unraisablehook = on_unraisable
  asyncio_logger = logging.getLogger("asyncio")
  if _not_an_orbax_task_report not in asyncio_logger.filters:
    asyncio_logger.addFilter(_not_an_orbax_task_report)


def _read_safely(step: int, read: Callable[[int], T]) -> T:
  """``read(step)``, with any error but a device's or a config from a newer jebm turned into a
  CorruptCheckpointError that says what went wrong (without orbax's tracebacks)."""
  _drop_orbax_leftover_reports()
  try:
    return read(step)
  except (CorruptCheckpointError, config_lib.ConfigVersionError):
    raise
  except (jax.errors.JaxRuntimeError, MemoryError):  # the device's trouble, not the files'
    raise
  except Exception as e:  # orbax and tensorstore raise many kinds on damaged files
    while e.__cause__ is not None:  # the innermost error says what is wrong (tensorstore's)
      e = e.__cause__
    lines = str(e).strip().splitlines() or [""]
    message = lines[0] if len(lines[0]) <= 300 else lines[0][:300] + "..."
    raise CorruptCheckpointError(f"{type(e).__name__}: {message}") from e


def _newest_readable(workdir: str, step: Optional[int], read: Callable[[int], T]) -> T:
  """``read(step)``, or ``read`` of the newest step that reads back whole when ``step`` is None
  (warning about each damaged one it skips)."""
  available = steps(workdir)
  if not available:
    raise FileNotFoundError(
      f"no checkpoint in {_directory(workdir)}: train one first with "
      f"`python -m experiments.train --workdir={workdir}`"
    )
  if step is not None:
    if step not in available:
      raise FileNotFoundError(
        f"no checkpoint for step {step} in {_directory(workdir)}; available: {available}"
      )
    try:
      return _read_safely(step, read)
    except CorruptCheckpointError as e:
      raise CorruptCheckpointError(
        f"checkpoint {_step_dir(workdir, step)} is damaged ({e}). Ask for another step "
        f"(available: {available}) or for none, which restores the newest readable one."
      ) from None
  damaged = []
  for s in reversed(available):
    try:
      result = _read_safely(s, read)
    except CorruptCheckpointError as e:
      logging.warning(
        "Checkpoint %s is damaged (%s); falling back to the one before", _step_dir(workdir, s), e
      )
      damaged.append(f"step {s}: {e}")
      continue
    if damaged:
      logging.warning("Read checkpoint step %d of %s instead", s, _directory(workdir))
    return result
  raise CorruptCheckpointError(
    f"no readable checkpoint in {_directory(workdir)}; every one is damaged:\n  "
    + "\n  ".join(damaged)
    + "\nMove that folder away to train afresh in this workdir, or use a new --workdir."
  ) from None


def _custom_metadata(workdir: str, step: int) -> Dict:
  """The custom metadata saved with a checkpoint (its checksums, when saved since they were
  added)."""
  with open(os.path.join(_step_dir(workdir, step), _STEP_METADATA)) as f:
    return json.load(f).get("custom_metadata") or {}


def _read_config(workdir: str, step: int) -> config_lib.Config:
  with _reader(workdir) as mngr:
    restored = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return config_lib.Config.from_dict(
    restored.config, source=f"checkpoint {_step_dir(workdir, step)}"
  )


def load_config(workdir: str, step: Optional[int] = None) -> config_lib.Config:
  """The Config saved with a checkpoint: of ``step``, or of the newest one whose config reads back
  (only the config is checked)."""
  return _newest_readable(workdir, step, lambda s: _read_config(workdir, s))


def _check(state: TrainState, recorded: Optional[Dict[str, int]]) -> None:
  """Raises CorruptCheckpointError if an array of the restored (saveable) ``state`` does not
  match its recorded CRC-32, or a float array is not finite."""
  for key, array in _host_arrays(state).items():
    if recorded is not None and key in recorded and _crc32(array) != recorded[key]:
      raise CorruptCheckpointError(f"{key} does not match the checksum saved with it")
    if jnp.issubdtype(array.dtype, jnp.inexact) and not np.all(np.isfinite(array)):
      raise CorruptCheckpointError(f"{key} holds NaN or infinite values")


def _read(
  workdir: str, step: int, mesh: Optional[jax.sharding.Mesh]
) -> Tuple[TrainState, config_lib.Config]:
  config = _read_config(workdir, step)
  recorded = _custom_metadata(workdir, step).get(_CHECKSUMS)
  target = jax.eval_shape(lambda: _to_saveable(config_lib.create_state(config)))
  if mesh is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  else:
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), target)
  with _reader(workdir) as mngr:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  _check(restored.state, recorded)
  return restored.state.replace(rng=jax.random.wrap_key_data(restored.state.rng)), config


def restore(
  workdir: str, step: Optional[int] = None, *, mesh: Optional[jax.sharding.Mesh] = None
) -> Tuple[TrainState, config_lib.Config]:
  """Restores ``(train_state, config)`` from ``workdir``: of ``step``, or of the newest
  checkpoint that reads back whole (see the module docstring for damaged checkpoints).

  Works in a notebook with nothing but the workdir, on any number of devices: the saved config
  rebuilds the state's structure. By default everything lands on this process's first device, the
  replay buffer in logical order (what ``jebm.generate`` and ``jebm.replay.sample`` read). With a
  ``mesh`` (``jebm.parallel.make_mesh``) the state is placed for data-parallel training, as
  ``jebm.parallel.shard_state`` places it.

  Raises:
    FileNotFoundError: no checkpoint, or none of ``step``.
    CorruptCheckpointError: the checkpoint of ``step`` is damaged, or every one is.
  """
  state, config = _newest_readable(workdir, step, lambda s: _read(workdir, s, mesh))
  return (state if mesh is None else parallel.shard_state(state, mesh)), config
