r"""Generates samples from a checkpoint:
``python -m experiments.sample --workdir=W --num_samples=N --out=F.npz``.

Conditional models get N samples per class. Writes F.npz (``images`` uint8 NHWC, ``labels`` int,
-1 for unconditional) and a PNG preview beside it (F.png: one row per class of at most 20 samples,
or the first 400 samples of an unconditional model; the .npz keeps them all).
"""

import os

import jax
import numpy as np
from absl import app, flags, logging

from experiments import flags as launcher_flags
from jebm import checkpoint, files, generate, replay, viz

flags.DEFINE_integer("num_samples", 8, "Samples (per class for conditional models).", lower_bound=1)
flags.DEFINE_string("out", None, "Output .npz (default: <workdir>/samples/samples.npz).")
flags.DEFINE_integer(
  "steps", None, "Langevin steps (default: the config's eval_langevin_steps).", lower_bound=1
)
flags.DEFINE_enum(
  "init",
  "noise",
  ["noise", "replay"],
  "Chain starts: uniform noise, or the replay buffer's chains (under their own labels).",
)
flags.DEFINE_float("step_size", None, "Override the saved Langevin step size.")
flags.DEFINE_float("noise_scale", None, "Override the saved Langevin noise scale.")
flags.DEFINE_integer(
  "checkpoint_step", None, "Checkpoint to restore (default: the newest).", lower_bound=0
)
flags.DEFINE_integer("seed", 0, "Sampling seed.", lower_bound=0, upper_bound=2**63 - 1)
FLAGS = flags.FLAGS


def check_flags() -> None:
  """Flag errors found before the checkpoint is read (UsageError names the flag); the integer
  flags' bounds are checked when they are parsed."""
  launcher_flags.check_path_flags()
  if FLAGS.out is not None and not FLAGS.out.endswith(".npz"):
    raise app.UsageError(f"--out must be a path ending in .npz, got {FLAGS.out!r}")
  launcher_flags.check_number("step_size", 0.0, strict=True)
  launcher_flags.check_number("noise_scale", 0.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  launcher_flags.quiet_library_logs()
  check_flags()
  config = launcher_flags.checkpoint_config(FLAGS.workdir, FLAGS.checkpoint_step)
  overrides = {k: FLAGS[k].value for k in ("step_size", "noise_scale") if FLAGS[k].present}
  config = launcher_flags.build_config(config, overrides)
  if config.conditional and not config.class_conditional:
    raise app.UsageError(
      f"--workdir={FLAGS.workdir} holds a model conditioned on --condition={config.condition} "
      "vectors, not class ids: sample it with python -m experiments.compose --workdirs=... "
      "--conditions=..."
    )
  state, _ = checkpoint.restore(FLAGS.workdir, FLAGS.checkpoint_step)
  labels = generate.class_labels(config, FLAGS.num_samples) if FLAGS.init == "noise" else None
  num = FLAGS.num_samples * max(config.num_classes, 1)
  samples, labels = generate.generate_batched(
    jax.random.key(FLAGS.seed),
    state,
    config,
    num=num,
    labels=labels,
    num_steps=FLAGS.steps,
    init=FLAGS.init,
  )
  if labels is not None:  # sort by class for the grid (replay chains come in random classes)
    order = np.argsort(np.asarray(labels), kind="stable")
    samples, labels = samples[order], labels[order]
  out = FLAGS.out or os.path.join(FLAGS.workdir, "samples", "samples.npz")
  images = np.asarray(replay.quantize(samples))
  labels = np.full((num,), -1) if labels is None else np.asarray(labels)
  files.write_atomically(out, lambda tmp: np.savez(tmp, images=images, labels=labels))
  png = os.path.splitext(out)[0] + ".png"
  if images.ndim == 4:
    grid = viz.preview_grid(images, labels if config.conditional else None)
    viz.save_png(png, grid, scale=viz.readable_scale(images.shape[1]))
  logging.info("Wrote %d samples to %s and a preview of them to %s", num, out, png)


if __name__ == "__main__":
  app.run(main)
