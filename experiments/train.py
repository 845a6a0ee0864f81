r"""Trains an EBM: ``python -m experiments.train --preset=default --workdir=workdirs/default``.

Every Config field is a flag that overrides the preset, e.g. ``--num_steps=200 --step_size=5``.
Re-running the same command resumes from the newest checkpoint in the workdir.
"""

import dataclasses

from absl import app, flags, logging

from experiments import flags as launcher_flags
from experiments.configs import get_preset
from experiments.trainer import train_and_evaluate

flags.DEFINE_string("preset", "default", "Named recipe from experiments/configs/presets.py.")
launcher_flags.define_config_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  launcher_flags.quiet_library_logs()
  launcher_flags.maybe_initialize_multihost()
  config = dataclasses.replace(get_preset(FLAGS.preset), **launcher_flags.config_overrides())
  logging.info("Training %s in %s", FLAGS.preset, FLAGS.workdir)
  train_and_evaluate(config, FLAGS.workdir, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir)


if __name__ == "__main__":
  app.run(main)
