"""absl flags shared by the launchers: one flag per ``jebm.config.Config`` field, plus paths."""

import dataclasses
import logging as std_logging
import os

import jax
from absl import flags
from absl import logging as absl_logging

from jebm.config import Config
from jebm.train import NEGATIVE_LABELS, OBJECTIVES
from jebm.xla_flags import use_fast_cpu_flags

FLAGS = flags.FLAGS
use_fast_cpu_flags()  # before the launchers' first computation: XLA reads XLA_FLAGS only then

flags.DEFINE_string("workdir", None, "Folder that holds everything of the run.", required=True)
flags.DEFINE_string(
  "data_dir", None, "TFDS data dir (default: $JEBM_DATA_DIR or ~/tensorflow_datasets)."
)
flags.DEFINE_string("manual_dir", None, "Folder of the MNIST IDX files (default: $JEBM_MNIST_DIR).")


# String fields with a fixed set of values: an enum flag names the values when one is wrong.
CHOICES = {"negative_labels": NEGATIVE_LABELS, "objective": OBJECTIVES}


def define_config_flags() -> None:
  """Defines ``--<field>`` for every Config field, defaulting to None (= keep the preset's)."""
  for field in dataclasses.fields(Config):
    if field.name == "example_shape":
      continue  # taken from the data
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
  """The Config fields set on the command line, converted to the fields' types."""
  overrides = {}
  for field in dataclasses.fields(Config):
    if field.name in FLAGS and FLAGS[field.name].present:
      value = FLAGS[field.name].value
      overrides[field.name] = (
        tuple(int(v) for v in value) if isinstance(field.default, tuple) else value
      )
  return overrides


def maybe_initialize_multihost() -> None:
  """Joins a multi-process JAX job when the environment describes one (coordinator address set,
  or a SLURM job of several tasks); single-process runs skip this."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()


def quiet_library_logs() -> None:
  """Keeps orbax's and tfds's INFO chatter out of the run's log (warnings still show)."""
  noisy = ("/orbax/", "/tensorflow_datasets/", "/absl/logging")
  absl_logging.get_absl_handler().addFilter(
    lambda record: (
      record.levelno >= std_logging.WARNING or not any(part in record.pathname for part in noisy)
    )
  )
