"""absl flags shared by the launchers: one flag per ``jebm.config.Config`` field, plus paths; and
the checks that turn every bad flag value into a one-line ``app.UsageError`` naming the flag,
before any work is done."""

import dataclasses
import logging as std_logging
import math
import os
from typing import Optional

import jax
from absl import app, flags
from absl import logging as absl_logging

from jebm import checkpoint
from jebm import config as config_lib
from jebm.config import Config

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Folder that holds everything of the run.", required=True)
flags.DEFINE_string(
  "data_dir", None, "TFDS data dir (default: $JEBM_DATA_DIR or ~/tensorflow_datasets)."
)
flags.DEFINE_string("manual_dir", None, "Folder of the MNIST IDX files (default: $JEBM_MNIST_DIR).")


# String fields with a fixed set of values: an enum flag names the values when one is wrong.
CHOICES = config_lib.CHOICES


def define_config_flags() -> None:
  """Defines ``--<field>`` for every Config field, defaulting to None (= keep the preset's)."""
  for field in dataclasses.fields(Config):
    if field.name in ("example_shape", "rollbacks"):
      continue  # taken from the data; counted by the trainer
    default, help_ = field.default, f"Config.{field.name} (default: the preset's value)."
    if field.name in CHOICES:
      flags.DEFINE_enum(field.name, None, CHOICES[field.name], help_)
    elif isinstance(default, bool):
      flags.DEFINE_bool(field.name, None, help_)
    elif isinstance(default, int):
      flags.DEFINE_integer(field.name, None, help_)
    elif isinstance(default, float):
      flags.DEFINE_float(field.name, None, help_)
    elif isinstance(default, tuple):
      flags.DEFINE_list(field.name, None, help_ + " Comma-separated ints.")
    else:
      flags.DEFINE_string(field.name, None, help_)


def config_overrides() -> dict:
  """The Config fields set on the command line, converted to the fields' types; UsageError for
  a list entry that is not an int."""
  overrides = {}
  for field in dataclasses.fields(Config):
    if field.name in FLAGS and FLAGS[field.name].present:
      value = FLAGS[field.name].value
      if isinstance(field.default, tuple):
        try:
          value = tuple(int(v) for v in value)
        except ValueError:
          raise app.UsageError(
            f"--{field.name} takes comma-separated ints, got {','.join(value)!r}"
          ) from None
      overrides[field.name] = value
  return overrides


def build_config(base: Config, overrides: dict) -> Config:
  """``base`` with ``overrides``; Config's ValueError (which names the flag) as a UsageError."""
  try:
    return dataclasses.replace(base, **overrides)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def check_path_flags() -> None:
  """UsageError for an empty --workdir, --data_dir or --manual_dir, or a --manual_dir that is
  not a folder."""
  for name in ("workdir", "data_dir", "manual_dir"):
    value = FLAGS[name].value
    if value is not None and not value.strip():
      raise app.UsageError(f"--{name} must be a path, got an empty value")
  if FLAGS.manual_dir is not None and not os.path.isdir(FLAGS.manual_dir):
    raise app.UsageError(f"--manual_dir={FLAGS.manual_dir} is not a folder")


def check_number(name: str, low: float, *, strict: bool = False) -> None:
  """UsageError unless the float flag --``name`` is unset or a finite number >= ``low`` (> ``low``
  when ``strict``)."""
  value = FLAGS[name].value
  if value is not None and not (math.isfinite(value) and (value > low if strict else value >= low)):
    raise app.UsageError(
      f"--{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value}"
    )


def check_nonempty_lists(names) -> None:
  """UsageError for a list flag among ``names`` given on the command line with no entries."""
  for name in names:
    if FLAGS[name].present and not FLAGS[name].value:
      raise app.UsageError(f"--{name} is empty: give at least one value, or leave it out")


def checkpoint_config(workdir: str, step: Optional[int]) -> Config:
  """The config saved with the checkpoint the flags name; UsageError (one line, no traceback)
  when there is none, or its config cannot be read."""
  try:
    return checkpoint.load_config(workdir, step)
  except FileNotFoundError as e:
    named = step is not None and checkpoint.latest_step(workdir) is not None
    raise app.UsageError(f"{'--checkpoint_step' if named else '--workdir'}: {e}") from None
  except ValueError as e:  # e.g. a config written by a newer jebm
    raise app.UsageError(f"--workdir={workdir}: {e}") from None


def maybe_initialize_multihost() -> None:
  """Joins a multi-process JAX job when the environment describes one; single-process runs skip
  this. Explicit launch: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID; SLURM: tasks started with ``srun`` (JAX reads SLURM's variables). UsageError
  names a missing or malformed variable."""
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    values = {}
    for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
      try:
        values[name] = int(env[name])
      except (KeyError, ValueError):
        raise app.UsageError(
          f"JAX_COORDINATOR_ADDRESS is set, so {name} must be an int, got {env.get(name)!r}"
        ) from None
    jax.distributed.initialize(
      coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
      num_processes=values["JAX_NUM_PROCESSES"],
      process_id=values["JAX_PROCESS_ID"],
    )
  elif int(env.get("SLURM_NTASKS", "1")) > 1:
    if "SLURM_STEP_NODELIST" not in env:
      raise app.UsageError("a SLURM job of several tasks must start them with srun")
    jax.distributed.initialize()


def quiet_library_logs() -> None:
  """Keeps orbax's and tfds's INFO chatter out of the run's log (warnings still show)."""
  noisy = ("/orbax/", "/tensorflow_datasets/", "/absl/logging")
  absl_logging.get_absl_handler().addFilter(
    lambda record: (
      record.levelno >= std_logging.WARNING or not any(part in record.pathname for part in noisy)
    )
  )
