r"""Trains an EBM: ``python -m experiments.train --preset=default --workdir=workdirs/default``.

Every Config field is a flag that overrides the preset, e.g. ``--num_steps=200 --step_size=5``.
Re-running the same command resumes from the newest checkpoint in the workdir.
"""

from absl import app, flags, logging

from experiments import flags as launcher_flags
from experiments.configs import get_preset
from experiments.trainer import LOADERS, DivergenceError, FlagConflictError, train_and_evaluate
from jebm import config as config_lib
from jebm.data import DataError

flags.DEFINE_string("preset", "default", "Named recipe from experiments/configs/presets.py.")
flags.DEFINE_enum(
  "loader",
  "auto",
  LOADERS,
  "How training batches are read (the batches are the same): 'memory' loads the split, 'grain' "
  "streams it from disk (memory flat in its size), 'auto' streams splits over 1 GiB.",
)
flags.DEFINE_integer(
  "loader_workers", 0, "grain worker processes for --loader=grain (0: threads)", lower_bound=0
)
launcher_flags.define_config_flags()
FLAGS = flags.FLAGS


def config_from_flags() -> config_lib.Config:
  """The preset with the command line's overrides, every value checked; UsageError names the
  bad flag. Reads nothing but the flags."""
  launcher_flags.check_path_flags()
  try:
    preset = get_preset(FLAGS.preset)
  except ValueError as e:
    raise app.UsageError(f"--preset: {e}") from None
  return launcher_flags.build_config(preset, launcher_flags.config_overrides())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  launcher_flags.quiet_library_logs()
  config = config_from_flags()
  launcher_flags.maybe_initialize_multihost()
  logging.info("Training %s in %s", FLAGS.preset, FLAGS.workdir)
  try:
    train_and_evaluate(
      config,
      FLAGS.workdir,
      data_dir=FLAGS.data_dir,
      manual_dir=FLAGS.manual_dir,
      loader=FLAGS.loader,
      loader_workers=FLAGS.loader_workers,
    )
  except (DataError, FlagConflictError) as e:  # found before any training step
    raise app.UsageError(str(e)) from None
  except DivergenceError as e:  # the newest checkpoint is intact; the message says what to do
    raise SystemExit(f"Error: {e}") from None


if __name__ == "__main__":
  app.run(main)
