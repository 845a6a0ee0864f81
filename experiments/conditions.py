"""Checkpoints restored under conditions written on the command line, shared by the launchers
that sample trained models (``compose``, ``traverse``): a class id ("label" models) or a dSprites
factor in its units (x:y in [0, 1], a scale, a shape name or id, an angle in radians)."""

import os
import re

import jax
import numpy as np
from absl import app

from jebm import checkpoint, compose, generate, langevin
from jebm import config as config_lib
from jebm.data import dsprites

_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
CONDITION_SYNTAX = re.compile(rf"{_NUMBER}(:{_NUMBER})*|" + "|".join(dsprites.SHAPES))


def parse_condition(config: config_lib.Config, text: str, what: str):
  """(condition [...] for the model of ``config``, latents_values row [5] with the factor it
  sets, NaN elsewhere) from ``text``; UsageError naming ``what`` when it does not fit."""
  latents = np.full((5,), np.nan, np.float32)
  if not config.conditional:
    raise app.UsageError(f"{what}: the model is unconditional; it takes no condition")
  try:
    if config.condition == "label":
      label = int(text)
      if not 0 <= label < config.num_classes:
        raise ValueError(f"class ids are 0 to {config.num_classes - 1}")
      return np.int32(label), latents
    if config.condition == "shape":
      latents[0] = dsprites.SHAPES.index(text) if text in dsprites.SHAPES else int(text)
      if not 0 <= latents[0] < len(dsprites.SHAPES):
        raise ValueError(f"shape ids are 0 to {len(dsprites.SHAPES) - 1}")
    else:
      values = [float(v) for v in text.split(":")]
      columns = dsprites.CONDITION_COLUMNS[config.condition]
      if len(values) != len(columns):
        raise ValueError(f"it takes {len(columns)} number(s) separated by ':'")
      latents[columns] = values
  except ValueError as e:
    units = {"position": "x:y", "scale": "a scale", "shape": "a shape", "rotation": "an angle"}
    raise app.UsageError(
      f"{what}: {text!r} is not a {config.condition} condition "
      f"({units.get(config.condition, 'a class id')}): {e}"
    ) from None
  return dsprites.condition_vectors(config.condition, latents), latents


def restore_models(workdirs, conditions, flag_names=("workdirs", "conditions")):
  """[(energy fn of x alone, config, latents row)] of every workdir under its condition (None for
  an unconditional model); UsageError naming ``flag_names`` for a missing checkpoint, a condition
  that does not fit, or models of different image shapes."""
  workdirs_flag, conditions_flag = flag_names
  entry = lambda flag, i: f"--{flag}" if len(workdirs) == 1 else f"--{flag} entry {i + 1}"
  if len(conditions) != len(workdirs):
    raise app.UsageError(
      f"--{conditions_flag} has {len(conditions)} entries but --{workdirs_flag} {len(workdirs)}: "
      "give one condition per model"
    )
  for i, text in enumerate(conditions):
    if text is not None and not CONDITION_SYNTAX.fullmatch(text):
      raise app.UsageError(
        f"{entry(conditions_flag, i)} ({text!r}) is neither a number, numbers joined by ':', nor a "
        f"shape name {dsprites.SHAPES}"
      )
  for i, workdir in enumerate(workdirs):
    if not os.path.isdir(workdir):
      raise app.UsageError(f"{entry(workdirs_flag, i)} ({workdir!r}) is not a folder")
  models = []
  for i, (workdir, text) in enumerate(zip(workdirs, conditions)):
    try:
      state, config = checkpoint.restore(workdir)
    except (FileNotFoundError, ValueError) as e:
      raise app.UsageError(f"{entry(workdirs_flag, i)} ({workdir}): {e}") from None
    energy = generate.energy_fn(state, config)
    latents = np.full((5,), np.nan, np.float32)
    if text is not None or config.conditional:
      if text is None:
        raise app.UsageError(f"--{conditions_flag}: the model in {workdir} needs a condition")
      y, latents = parse_condition(config, text, entry(conditions_flag, i))
      energy = compose.condition(energy, y)
    models.append((energy, config, latents))
  shapes = {tuple(c.example_shape) for _, c, _ in models}
  if len(shapes) > 1:
    listed = ", ".join(f"{w}: {c.example_shape}" for w, (_, c, _) in zip(workdirs, models))
    raise app.UsageError(f"--{workdirs_flag}: the models see different example shapes ({listed})")
  return models


def sample(key, energies, config, num: int, steps: int, sequential: bool = False):
  """``num`` samples [num, ...] in [x_min, x_max] from uniform noise: ``steps`` Langevin steps
  on ``energies[0]``, or ``steps`` rounds of one step per energy when ``sequential``."""
  init_key, chain_key = jax.random.split(key)
  x0 = jax.random.uniform(
    init_key, (num, *config.example_shape), minval=config.init_low, maxval=config.init_high
  )
  if sequential:
    lconfig = config_lib.langevin_config(config, steps * len(energies))
    run = lambda x: langevin.sample_ensemble(chain_key, energies, x, lconfig)[0]
  else:
    lconfig = config_lib.langevin_config(config, steps)
    run = lambda x: langevin.sample(chain_key, energies[0], x, lconfig)[0]
  return np.asarray(jax.jit(run)(x0))
