r"""Latent traversal of a trained EBM (the paper's ``latent`` task):
``python -m experiments.traverse --workdir=W --condition=0.5:0.5 --out=F.png``.

At a start image (a sample of the model under its condition, or with ``--start=real`` a real
dSprites image with the conditioned factor), the Hessian of the energy gives the directions in
which the energy curves most (``--curvature=largest``) or least (``smallest``, the paper's code);
the image is moved by each of ``--distances`` along each of the top ``--k`` directions and
refined by ``--refine_steps`` Langevin steps of 4 times the model's step size (as the paper's
code). ``jebm.traversal`` has the maths; the full Hessian suits images up to 64 x 64.

Writes F.png (for each direction, a row of the moved images, then a row of them refined) and
F.npz (``start`` [H, W, C], ``eigenvalues`` [k], ``directions`` [k, H, W, C] of unit norm, ``moved``
and ``refined`` [k, len(distances), H, W, C], all float32).
"""

import dataclasses
import os

import jax
import numpy as np
from absl import app, flags, logging

from experiments import conditions
from jebm import config as config_lib
from jebm import files, traversal, viz
from jebm.data import dsprites
from jebm.eval import readouts

flags.DEFINE_string("workdir", None, "Checkpoint folder of the model.", required=True)
flags.DEFINE_string(
  "condition",
  None,
  "The model's condition in its units (a class id, x:y, a scale, a shape, an angle); "
  "required for a conditional model.",
)
flags.DEFINE_string("out", None, "Output .png; F.npz goes beside it.", required=True)
flags.DEFINE_enum("start", "sample", ("sample", "real"), "Start image: a sample, or real dSprites.")
flags.DEFINE_enum("curvature", "largest", ("largest", "smallest"), "Which Hessian directions.")
flags.DEFINE_integer("k", 3, "Directions traversed.", lower_bound=1, upper_bound=16)
flags.DEFINE_list("distances", ["-8", "-4", "0", "4", "8"], "Distances moved along each direction.")
flags.DEFINE_integer(
  "steps", None, "Langevin steps of the start sample (default: eval_langevin_steps).", lower_bound=1
)
flags.DEFINE_integer("refine_steps", 20, "Langevin steps refining each moved image.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Sampling seed.", lower_bound=0, upper_bound=2**63 - 1)
FLAGS = flags.FLAGS


def parse_distances(values):
  try:
    distances = [float(v) for v in values]
  except ValueError:
    raise app.UsageError(f"--distances takes numbers, got {values}") from None
  if not distances or not all(np.isfinite(distances)):
    raise app.UsageError(f"--distances takes finite numbers, got {values}")
  return distances


def start_image(key, energy, config, latents, start: str, steps: int) -> np.ndarray:
  """One start image [H, W, C]: a Langevin sample of ``energy``, or a real dSprites image with
  the factor of latents_values row [5] (NaN where unset, those drawn at random)."""
  if start == "sample":
    return conditions.sample(key, [energy], config, 1, steps)[0]
  if config.condition not in dsprites.CONDITIONS:
    raise app.UsageError(
      f"--start=real draws real dSprites images; this model is conditioned on {config.condition!r}"
    )
  random_latents = dsprites.latent_values(
    dsprites.latent_classes(np.random.default_rng(FLAGS.seed).integers(0, dsprites.NUM_IMAGES, 1))
  )
  real = np.where(np.isnan(latents), random_latents, latents)
  return readouts.drawn_images(dsprites.nearest_index(real), config.example_shape[0])[0][0]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.out.endswith(".png"):
    raise app.UsageError(f"--out must be a path ending in .png, got {FLAGS.out!r}")
  distances = parse_distances(FLAGS.distances)
  [(energy, config, latents)] = conditions.restore_models(
    [FLAGS.workdir], [FLAGS.condition], flag_names=("workdir", "condition")
  )
  if len(config.example_shape) != 3:
    raise app.UsageError(f"--workdir: the model sees {config.example_shape}, not images")
  if FLAGS.k > int(np.prod(config.example_shape)):
    raise app.UsageError(
      f"--k={FLAGS.k} exceeds the image's {np.prod(config.example_shape)} pixels"
    )
  start_key, refine_key = jax.random.split(jax.random.key(FLAGS.seed))
  steps = FLAGS.steps or config.eval_langevin_steps
  x = start_image(start_key, energy, config, latents, FLAGS.start, steps)
  largest = FLAGS.curvature == "largest"
  values, directions = jax.jit(
    lambda x: traversal.hessian_directions(energy, x, k=FLAGS.k, largest=largest)
  )(x)
  lconfig = config_lib.langevin_config(config, FLAGS.refine_steps)
  lconfig = dataclasses.replace(lconfig, step_size=4 * lconfig.step_size)
  unrefined = dataclasses.replace(lconfig, num_steps=0)
  moved, refined = (
    np.asarray(traversal.traverse(refine_key, energy, x, directions, distances, c))
    for c in (unrefined, lconfig)
  )
  if config.x_min is not None:  # as the refined images are
    moved = np.clip(moved, config.x_min, config.x_max)
  stem = os.path.splitext(FLAGS.out)[0]
  arrays = dict(
    start=x,
    eigenvalues=np.asarray(values),
    directions=np.asarray(directions),
    moved=moved,
    refined=refined,
  )
  files.write_atomically(stem + ".npz", lambda tmp: np.savez(tmp, **arrays))
  rows = np.stack([moved, refined], axis=1).reshape(-1, *x.shape)  # moved, refined per direction
  grid = viz.image_grid(rows, ncol=len(distances))
  viz.save_png(FLAGS.out, grid, scale=viz.readable_scale(x.shape[0]))
  logging.info("Wrote %s: %s curvatures %s", FLAGS.out, FLAGS.curvature, np.asarray(values))


if __name__ == "__main__":
  app.run(main)
