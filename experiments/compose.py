r"""Samples from a composition of separately trained EBMs:
``python -m experiments.compose --workdirs=A,B --conditions=0.2:0.8,0.9 --mode=product --out=F.npz``.

Each checkpoint gets its own condition; their energies are composed (``jebm.compose``) into one
ordinary jebm energy fn and sampled by Langevin from uniform noise:
  product     E = sum_i E_i(x | c_i), one gradient of the sum per step (product of experts);
  sequential  the paper's ``conceptcombine``: each step moves x by every model in turn
              (``--steps`` rounds of one step per model); each step's noise moves
              every direction but one model pulls, so it samples the product hotter (at
              temperature k for k models that act on separate directions);
  mixture     E = -logsumexp_i(-E_i(x | c_i)): any one of the conditions;
  negation    E = E_1(x | c_1) - E_2(x | c_2): the first condition but not the second (two models).
``--weights`` scales each model's energy (w_i E_i in a product or a sequential step, p_i weighted
by w_i in a mixture, w_1 E_1 - w_2 E_2 in a negation); all 1 by default.

A condition is written in the units of what its model is conditioned on (``Config.condition``):
a class id ("label"), x:y in [0, 1] (position), the scale (scale), a shape name or id (shape), an
angle in radians (rotation).

Writes F.npz (``images`` uint8 NHWC of the composition, ``single_<i>`` of each model alone under
its condition), F.png (a row of samples per model alone, then the composition) and, for dSprites
factor models, F.json: for each model, the read-out error (``jebm.eval.readouts``) of its factor
against its condition in its own samples ("single"), in the composition's ("composition"), and in
two references scored the same way: real images with that factor ("real": the read-out's own
error) and real images of random factors ("chance"). Position errors are in pixels of the
64 x 64 frame, rotation errors in degrees modulo the shape's symmetry; shape scores are accuracy.
For a negation the second model's factor should be missed: its "composition" score near chance.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments import conditions

from jebm import compose, files, replay, viz
from jebm.data import dsprites
from jebm.eval import readouts

MODES = ("product", "sequential", "mixture", "negation")
_FACTOR_ERRORS = {
  "position": "position_px",
  "scale": "scale",
  "shape": "shape_correct",
  "rotation": "rotation_deg",
}

flags.DEFINE_list("workdirs", None, "Checkpoint folders of the models to compose.", required=True)
flags.DEFINE_list(
  "conditions",
  None,
  "One condition per workdir, in its model's units: a class id, x:y, a scale, a shape name or id, "
  "an angle in radians.",
  required=True,
)
flags.DEFINE_enum("mode", "product", MODES, "How the energies are composed.")
flags.DEFINE_string("out", None, "Output .npz; F.png and F.json go beside it.", required=True)
flags.DEFINE_integer(
  "num_samples", 64, "Samples of the composition and of each model.", lower_bound=1
)
flags.DEFINE_integer(
  "steps", None, "Langevin steps (default: the first model's eval_langevin_steps).", lower_bound=1
)
flags.DEFINE_list(
  "weights", None, "One positive weight per workdir (default: all 1); see the module docstring."
)
flags.DEFINE_integer("seed", 0, "Sampling seed.", lower_bound=0, upper_bound=2**63 - 1)
flags.DEFINE_string(
  "readouts",
  None,
  "Read-out params (trained and written there when missing; default: beside --out).",
)
FLAGS = flags.FLAGS


def parse_weights(values, num_models: int):
  """The weights [num_models] of --weights (all 1 when not given)."""
  if values is None:
    return [1.0] * num_models
  try:
    weights = [float(v) for v in values]
  except ValueError:
    raise app.UsageError(f"--weights takes positive numbers, got {values}") from None
  if not all(np.isfinite(w) and w > 0 for w in weights):
    raise app.UsageError(f"--weights takes positive numbers, got {values}")
  if len(weights) != num_models:
    raise app.UsageError(f"--weights has {len(weights)} entries but --workdirs {num_models}")
  return weights


def composed_energy(mode: str, energies, weights):
  """The energy fn of ``mode`` over conditioned energy fns and their weights; for "sequential",
  the list of the weighted energies, stepped in turn."""
  if mode == "product":
    return compose.product(*energies, weights=weights)
  if mode == "mixture":
    return compose.mixture(*energies, weights=weights)
  if mode == "negation":
    if len(energies) != 2:
      raise app.UsageError(f"--mode=negation takes two models (A but not B), got {len(energies)}")
    return compose.product(*energies, weights=(weights[0], -weights[1]))  # w1 E1 - w2 E2
  if mode == "sequential":
    return [compose.product(e, weights=[w]) for e, w in zip(energies, weights)]
  raise app.UsageError(f"--mode must be one of {MODES}, got {mode!r}")


def readout_report(params, composed, singles, models, seed: int):
  """For each model i: the read-out error (mean and standard error) of its factor against its
  condition, in its own samples, in the composition's, in real images with that factor (the
  read-out's own error) and in real images of random factors (chance)."""
  num, size = len(composed), composed.shape[1]
  rng = np.random.default_rng(seed)
  random_latents = readouts.drawn_images(rng.integers(0, dsprites.NUM_IMAGES, num), size)[1]
  chance = readouts.drawn_images(dsprites.nearest_index(random_latents), size)[0]

  def score(images, factor, latents):
    latents = np.broadcast_to(latents, (len(images), 5)).copy()
    unknown_shape = np.isnan(latents[:, 0])  # the rotation error needs a shape: the one seen
    latents[unknown_shape, 0] = readouts.predicted_shapes(params, images)[unknown_shape]
    summary = readouts.summarize(readouts.errors(params, images, np.nan_to_num(latents)))
    return summary[_FACTOR_ERRORS[factor]]

  report = {key: [] for key in ("asked", "single", "composition", "real", "chance")}
  for images, (_, config, latents) in zip(singles, models):
    factor = config.condition
    real_latents = np.where(np.isnan(latents), random_latents, latents)
    real = readouts.drawn_images(dsprites.nearest_index(real_latents), size)[0]
    report["asked"].append(
      {factor: [round(float(v), 6) for v in latents[dsprites.CONDITION_COLUMNS[factor]]]}
    )
    for key, shown in (("single", images), ("composition", composed), ("real", real)):
      report[key].append({factor: score(shown, factor, latents)})
    report["chance"].append({factor: score(chance, factor, latents)})
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.readouts == "":
    raise app.UsageError("--readouts is empty: give a path, or leave it out")
  if not FLAGS.out.endswith(".npz"):
    raise app.UsageError(f"--out must be a path ending in .npz, got {FLAGS.out!r}")
  weights = parse_weights(FLAGS.weights, len(FLAGS.workdirs))
  models = conditions.restore_models(FLAGS.workdirs, FLAGS.conditions)
  energies = [energy for energy, _, _ in models]
  first = models[0][1]
  steps = FLAGS.steps or first.eval_langevin_steps
  key = jax.random.key(FLAGS.seed)
  composition = composed_energy(FLAGS.mode, energies, weights)
  sequential = FLAGS.mode == "sequential"
  composed = conditions.sample(
    key, composition if sequential else [composition], first, FLAGS.num_samples, steps, sequential
  )
  singles = [conditions.sample(key, [e], c, FLAGS.num_samples, steps) for e, c, _ in models]
  stem = os.path.splitext(FLAGS.out)[0]
  quantized = [np.asarray(replay.quantize(jnp.asarray(x))) for x in (*singles, composed)]
  arrays = {"images": quantized[-1], **{f"single_{i}": q for i, q in enumerate(quantized[:-1])}}
  files.write_atomically(FLAGS.out, lambda tmp: np.savez(tmp, **arrays))
  if len(first.example_shape) == 3:
    rows = [q[: min(16, len(q))] for q in quantized]
    grid = viz.image_grid(np.concatenate(rows), ncol=len(rows[0]))
    viz.save_png(stem + ".png", grid, scale=viz.readable_scale(first.example_shape[0]))
  if all(c.condition in dsprites.CONDITION_COLUMNS for _, c, _ in models):
    size = first.example_shape[0]
    path = FLAGS.readouts or os.path.join(
      os.path.dirname(FLAGS.out) or ".", f"readouts_{size}.msgpack"
    )
    params = readouts.load_or_train(path, size)
    report = readout_report(params, composed, singles, models, FLAGS.seed)
    report.update(
      mode=FLAGS.mode,
      workdirs=FLAGS.workdirs,
      conditions=FLAGS.conditions,
      weights=weights,
      steps=steps,
    )
    files.write_text(stem + ".json", json.dumps(report, indent=2))
    logging.info("Read-out errors: %s", json.dumps(report["composition"]))
  logging.info("Wrote %s (%s composition of %d models)", FLAGS.out, FLAGS.mode, len(models))


if __name__ == "__main__":
  app.run(main)
