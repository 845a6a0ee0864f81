"""The training loop: data -> data-parallel train step -> logs, summaries, sample grids, checkpoints.

Everything of a run lives in its workdir:
  config.json            the resolved Config
  checkpoints/<step>/    orbax checkpoints (train state + config)
  samples/step_<N>.png   chain start | sample | real, for a few chains
  events.out.tfevents.*  TensorBoard scalars and sample images
Re-running the same command on the same workdir resumes from the newest checkpoint.
"""

import dataclasses
import os
import time
import types
from typing import Callable, Dict, Iterator, Optional, Tuple

import grain
import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jebm import checkpoint, data, files, langevin, parallel, replay, viz
from jebm import config as config_lib
from jebm import train as train_lib
from jebm.data import dsprites
from jebm.energy import from_model


class DivergenceError(RuntimeError):
  """Training stopped because the loss or energies left the sane range."""


class FlagConflictError(ValueError):
  """The flags do not fit the workdir's checkpoint or the machine (a usage error)."""


LOADERS = ("auto", "memory", "grain")
# --loader=auto reads a split into memory up to this size and number of records (reading each
# record takes time: dSprites' 737,280 would take minutes before the first step).
MEMORY_LIMIT_BYTES = 2**30
MEMORY_LIMIT_RECORDS = 200_000


def _read_train_split(read, config: config_lib.Config, data_dir, manual_dir):
  """``read(dataset, "train", ...)`` (``data.load`` or ``data.arrays``); a missing split raises
  ``jebm.data.DataError`` with the message that says how to get it."""
  try:
    return read(config.dataset, "train", data_dir=data_dir, manual_dir=manual_dir)
  except FileNotFoundError as e:  # not prepared, or MNIST files missing: the message says how
    raise data.DataError(str(e)) from e


def _train_source(config: config_lib.Config, data_dir, manual_dir):
  """The training split as a random-access source, records as the run trains on them."""
  return _conditioned(config, _read_train_split(data.load, config, data_dir, manual_dir))


def _conditioned(config: config_lib.Config, source):
  """``source`` as the run trains on it: with a float condition (``--condition``), each record's
  "label" is that condition vector, read from the record's dSprites "latents_values"."""
  if config.condition == "label":
    return source
  if "latents_values" not in source[0]:
    raise data.DataError(
      f"--condition={config.condition} reads each record's dSprites 'latents_values', which "
      f"{_split_name(config)} does not have (use --dataset=dsprites)"
    )

  def to_condition(record):
    vector = dsprites.condition_vectors(config.condition, record["latents_values"])
    return {"image": record["image"], "label": vector}

  return grain.MapDataset.source(source).map(to_condition)


def _split_name(config: config_lib.Config, what: str = "") -> str:
  return f"dataset {config.dataset!r} (train split{what})"


def _check_one_image_size(config: config_lib.Config, source) -> None:
  """DataError before any work when the split's TFDS source declares images of varying size (as
  imagenet2012's) and the dataset name gives no size to resize them to: a stream could otherwise
  fail on the first batch whose sizes differ, mid-run. (A resized source has no such info.)"""
  info = getattr(source, "dataset_info", None)
  features = info.features if info is not None else {}
  shape = features["image"].shape if "image" in features else ()
  if None in shape:
    raise data.DataError(
      f"{_split_name(config)} has images of varying size {shape}; train on them resized with"
      f" --dataset={config.dataset}@SIZE (short side to SIZE, central SIZE x SIZE kept)"
    )


def _check_train_arrays(config: config_lib.Config, arrays, what: str = "") -> None:
  """Checks ``arrays`` (the split, or a batch of it) against ``config``: example_shape, labels in
  [0, num_classes), values finite and in [x_min, x_max]."""
  data.check_arrays(
    arrays,
    num_classes=config.num_classes if config.class_conditional else 0,
    value_range=(config.x_min, config.x_max),
    name=_split_name(config, what),
  )
  shape = tuple(arrays["image"].shape[1:])
  if config.example_shape and tuple(config.example_shape) != shape:
    raise data.DataError(
      f"config.example_shape {config.example_shape} does not match the data {shape}"
    )


def _check_batch_size(config: config_lib.Config, num_examples: int) -> None:
  if num_examples < config.batch_size:
    raise data.DataError(
      f"--batch_size={config.batch_size} exceeds the {num_examples} examples of "
      f"{_split_name(config)}"
    )


def load_train_data(
  config: config_lib.Config, data_dir=None, manual_dir=None
) -> Dict[str, np.ndarray]:
  """The training split as arrays, checked before any work against ``config`` (example_shape,
  labels in [0, num_classes), values finite and in [x_min, x_max], batch_size); a missing or
  unusable split raises ``jebm.data.DataError`` naming the problem."""
  if config.condition == "label":
    arrays = _read_train_split(data.arrays, config, data_dir, manual_dir)
  else:
    arrays = data.source_to_arrays(_train_source(config, data_dir, manual_dir))
  _check_train_arrays(config, arrays)
  _check_batch_size(config, len(arrays["image"]))
  arrays.setdefault("label", np.zeros((len(arrays["image"]),), np.int32))
  return arrays


def train_batches(
  config: config_lib.Config, *, loader="auto", loader_workers=0, data_dir=None, manual_dir=None
) -> Tuple[Tuple[int, ...], Callable[[int], Iterator]]:
  """(example_shape, batches_from) of the training split: ``batches_from(step)`` iterates this
  process's batches from global batch ``step`` on (it has ``close()``). The batches are the same
  whichever loader reads them (``jebm.data.batches`` / ``jebm.data.stream``).

  Args:
    config: the run's config (dataset, batch_size, seed and what the data is checked against).
    loader: "memory" (the split in memory), "grain" (streamed from disk by grain, memory flat in
      the dataset's size; checked on its first batch), or "auto": memory up to
      ``MEMORY_LIMIT_BYTES`` and ``MEMORY_LIMIT_RECORDS``, else grain.
    loader_workers: grain worker processes (0: threads of this process).
    data_dir, manual_dir: see ``jebm.data.load``.
  """
  if loader not in LOADERS:
    raise ValueError(f"--loader must be one of {LOADERS}, got {loader!r}")
  per_process, seed = config.batch_size // jax.process_count(), config.seed
  source = None if loader == "memory" else _train_source(config, data_dir, manual_dir)
  if loader == "auto":
    record_bytes = sum(np.asarray(v).nbytes for v in source[0].values())
    fits = len(source) * record_bytes <= MEMORY_LIMIT_BYTES
    loader = "memory" if fits and len(source) <= MEMORY_LIMIT_RECORDS else "grain"
  if loader == "memory":
    arrays = load_train_data(config, data_dir, manual_dir)
    return arrays["image"].shape[1:], lambda step: data.batches(
      arrays, per_process, seed=seed, start_step=step
    )
  _check_batch_size(config, len(source))
  _check_one_image_size(config, source)
  stream = lambda step: data.stream(
    source, per_process, seed=seed, start_step=step, num_workers=loader_workers
  )
  first_batch = data.read_batch(
    source,
    0,
    batch_size=per_process,
    seed=seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  _check_train_arrays(config, first_batch, ", its first batch")
  return first_batch["image"].shape[1:], stream


def write_config(workdir: str, config: config_lib.Config) -> None:
  """Writes ``<workdir>/config.json`` atomically."""
  files.write_text(os.path.join(workdir, "config.json"), config.to_json())


def new_state(config: config_lib.Config, mesh):
  """A fresh train state for ``config``, created in place on the mesh."""
  create = lambda: config_lib.create_state(config)
  return jax.jit(create, out_shardings=parallel.state_shardings(jax.eval_shape(create), mesh))()


def restore_or_create(workdir: str, config: config_lib.Config, mesh):
  """(state, config): the newest checkpoint's state if the workdir has one (its config must
  match; its count of divergence rollbacks carries on), else a new state; placed on the mesh."""
  if checkpoint.latest_step(workdir) is None:
    return new_state(config, mesh), config
  saved = checkpoint.load_config(workdir)
  mismatch = config_lib.mismatched_fields(saved, config)
  if mismatch:
    lines = "\n".join(
      f"  {k}: checkpoint has {a!r}, flags give {b!r}" for k, (a, b) in mismatch.items()
    )
    raise FlagConflictError(
      f"the checkpoint in {workdir} was made with a different config:\n{lines}\n"
      "Use the same flags to resume, or a new --workdir to start afresh."
    )
  state, _ = checkpoint.restore(workdir, mesh=mesh)
  logging.info("Resumed from step %d of %s", int(state.step), workdir)
  return state, dataclasses.replace(config, rollbacks=saved.rollbacks)


def check_divergence(metrics: Dict[str, float], step: int, max_energy: float) -> None:
  """Raises DivergenceError if the loss is not finite or a mean energy exceeds ``max_energy``."""
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  for k in ("energy_pos", "energy_neg"):
    if abs(metrics[k]) > max_energy:
      bad[k] = metrics[k]
  if bad:
    raise DivergenceError(
      f"training diverged at step {step}: {bad} (bound |energy| <= {max_energy}). The newest "
      "checkpoint is from before; resume from it with a lower --learning_rate or --step_size, "
      "or a higher --l2_coeff, or train with --on_divergence=rollback."
    )


def roll_back(workdir: str, config: config_lib.Config, mesh, error: DivergenceError):
  """(state, config) after a divergence under ``--on_divergence=rollback``: the newest
  checkpoint's state (a fresh one when there is none yet) and the config with one more rollback
  (so half the learning rate). Re-raises ``error`` when rollbacks are off or used up."""
  if config.on_divergence != "rollback" or config.rollbacks >= config.max_rollbacks:
    if config.on_divergence == "rollback":
      raise DivergenceError(f"{error} Gave up after {config.rollbacks} rollbacks.") from error
    raise error
  config = dataclasses.replace(config, rollbacks=config.rollbacks + 1)
  if checkpoint.latest_step(workdir) is None:
    state = new_state(config, mesh)
  else:
    state, _ = checkpoint.restore(workdir, mesh=mesh)
  logging.warning(
    "%s Rollback %d/%d: back to step %d, learning rate halved to %g.",
    error,
    config.rollbacks,
    config.max_rollbacks,
    int(state.step),
    config.learning_rate * 0.5**config.rollbacks,
  )
  return state, config


def make_sample_grid_fn(config: config_lib.Config, num: int):
  """``(state, batch) -> uint8 grid`` of ``num`` chains drawn as the training step draws them
  (replay or noise, labelled by ``config.negative_labels``): start | sample | real."""
  model, tconfig = config_lib.build_model(config), config_lib.train_config(config)

  @jax.jit
  def grid_images(state, images, labels):
    rng = jax.random.split(state.rng)[1]  # a stream apart from the training steps' fold_in keys
    start_key, label_key, chain_key, data_key = jax.random.split(rng, 4)
    x0, y_stored, _ = replay.sample(
      start_key,
      state.replay,
      num,
      init_fn=replay.uniform_init(config.init_low, config.init_high),
      reinit_prob=tconfig.reinit_prob,
      fresh_labels=labels,
    )
    y = train_lib.negative_labels(label_key, tconfig, labels, y_stored)
    energy = from_model(model.apply, state.variables())
    x, _ = langevin.sample(chain_key, energy, x0, tconfig.langevin, y=y)
    return x0, x, train_lib.positive_examples(data_key, images)

  def grid(state, batch):
    starts, samples, reals = jax.device_get(
      grid_images(parallel.to_logical_order(state), batch["image"][:num], batch["label"][:num])
    )
    return viz.chain_grid(starts, samples, reals)

  return grid


def make_step_fn(config: config_lib.Config, mesh):
  """The run's data-parallel train step ``(state, batch) -> (state, metrics)``."""
  return parallel.data_parallel(
    train_lib.make_train_step(
      config_lib.build_model(config),
      config_lib.build_optimizer(config),
      config_lib.train_config(config),
      axis_name=parallel.AXIS,
    ),
    mesh,
  )


def train_and_evaluate(
  config: config_lib.Config,
  workdir: str,
  *,
  data_dir: Optional[str] = None,
  manual_dir: Optional[str] = None,
  loader: str = "auto",
  loader_workers: int = 0,
) -> train_lib.TrainState:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint); returns the final state.
  ``loader``, ``loader_workers``: how the batches are read (``train_batches``); they do not
  change the batches, so a run may resume with another loader."""
  os.makedirs(workdir, exist_ok=True)
  shape, batches_from = train_batches(
    config,
    loader=loader,
    loader_workers=loader_workers,
    data_dir=data_dir,
    manual_dir=manual_dir,
  )
  config = dataclasses.replace(config, example_shape=tuple(shape))
  if config.augment != "none" and len(shape) != 3:
    raise data.DataError(f"--augment={config.augment} needs image data; {config.dataset!r} is not")
  mesh = parallel.make_mesh()
  if config.batch_size % mesh.size or config.batch_size % jax.process_count():
    raise FlagConflictError(
      f"--batch_size={config.batch_size} must be divisible by the {mesh.size} devices and the "
      f"{jax.process_count()} processes"
    )
  state, config = restore_or_create(workdir, config, mesh)
  if jax.process_index() == 0:
    write_config(workdir, config)
  step_fn = make_step_fn(config, mesh)
  is_image = len(config.example_shape) == 3
  draws_samples = is_image and config.objective == "cd"
  sample_grid = (
    make_sample_grid_fn(config, num=min(16, config.batch_size)) if draws_samples else None
  )
  writer = _summary_writer(workdir)
  start = step = int(state.step)
  batches = batches_from(start)
  with checkpoint.manager(workdir, keep=config.keep_checkpoints) as mngr:
    t0 = t_start = time.time()  # the run's wall clock; the rate's, reset by a rollback
    while step < config.num_steps:
      step += 1
      batch = next(batches)
      state, metrics = step_fn(state, parallel.shard_batch(batch, mesh))
      # Reading the metrics every step also blocks on it (on CPU, back-to-back collectives of
      # several devices can deadlock, see DESIGN.md) and lets the guard act before a NaN is saved.
      values = {k: float(v) for k, v in jax.device_get(metrics).items()}
      try:
        check_divergence(values, step, config.max_energy)
      except DivergenceError as error:
        mngr.wait_until_finished()
        state, config = roll_back(workdir, config, mesh, error)
        if jax.process_index() == 0:
          write_config(workdir, config)
        step_fn, start, step = make_step_fn(config, mesh), int(state.step), int(state.step)
        batches.close()
        batches, t_start = batches_from(step), time.time()
        continue
      out_of_time = _agreed(
        bool(config.time_limit_minutes) and time.time() - t0 > 60 * config.time_limit_minutes
      )
      last = step == config.num_steps or out_of_time
      if step % config.log_every == 0 or last:
        logging.info(
          "step %d/%d  %s  loss %.4f  E+ %.3f  E- %.3f%s",
          step,
          config.num_steps,
          _progress(start, step, config.num_steps, t_start),
          values["loss"],
          values["energy_pos"],
          values["energy_neg"],
          f"  batch accuracy {values['train_accuracy']:.3f}" if "train_accuracy" in values else "",
        )
        for k, v in values.items():
          writer.add_scalar(f"train/{k}", v, step)
      if sample_grid is not None and (step % config.sample_every == 0 or last):
        image = sample_grid(state, batch)  # on every process: it gathers the sharded buffer
        if jax.process_index() == 0:  # its batch starts the global one: the 1-process grid
          viz.save_png(
            os.path.join(workdir, "samples", f"step_{step:07d}.png"),
            image,
            scale=viz.readable_scale(config.example_shape[0]),
          )
        writer.add_image("samples", image, step, dataformats="HWC")
      if step % config.checkpoint_every == 0 or last:
        checkpoint.save(mngr, state, config)
      if out_of_time:
        logging.info(
          "Stopping at step %d: the time limit of %s minutes is reached",
          step,
          config.time_limit_minutes,
        )
        break
    mngr.wait_until_finished()
  batches.close()
  writer.close()
  return state


def _summary_writer(workdir: str):
  """TensorBoard event writer (tensorboardX: no TensorFlow needed); process 0's only (the
  processes of one run would write the same file), a writer that drops everything elsewhere."""
  if jax.process_index() != 0:
    ignore = lambda *args, **kwargs: None
    return types.SimpleNamespace(add_scalar=ignore, add_image=ignore, close=ignore)
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

  return SummaryWriter(workdir, flush_secs=30)


def _agreed(decision: bool) -> bool:
  """Process 0's ``decision``, in every process (each process's clock differs; processes that
  disagree on stopping would wait for each other's collectives forever)."""
  if jax.process_count() == 1:
    return decision
  return bool(multihost_utils.broadcast_one_to_all(np.bool_(decision)))


def _progress(start_step: int, step: int, total_steps: int, t0: float) -> str:
  """steps/s and ETA since the run (re)started at ``start_step`` at time ``t0``."""
  rate = (step - start_step) / max(time.time() - t0, 1e-9)
  eta = int((total_steps - step) / max(rate, 1e-9))
  return f"{rate:.2f} steps/s  ETA {eta // 60}m{eta % 60:02d}s"
