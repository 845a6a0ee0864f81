r"""Evaluates a checkpoint: ``python -m experiments.evaluate --workdir=W`` writes W/eval/report.json.

Tasks (``--tasks``, comma-separated; default: every task that applies to the model), each a module
of ``jebm/eval`` (``jebm.eval.TASKS``):
  sample_quality  samples (the replay buffer's chains run on, and per-class chains from noise)
                  scored by a judge classifier trained on the dataset's real training split:
                  accuracy on the conditioned label, FID and KID on judge features (or on a user
                  feature network, --feature_fn=module:function)
  classify        argmin_y E(x, y) as a classifier on the test split: accuracy, calibration
                  (ECE of softmax(-E(x, .))), confusion matrix (conditional models only)
  histograms      energies of train vs test data (PNG + summary)
  ood             AUROC of the energy's OOD scores against --ood_sets
The report keeps the results of tasks not run this time if they are of the same checkpoint step.
"""

import json
import os
import time

from absl import app, flags, logging

from experiments import flags as launcher_flags
from jebm import checkpoint, files
from jebm.eval import SYNTHETIC_SETS, TASKS, EvalContext, check_ood_spec, check_tasks
from jebm.eval import default_tasks

flags.DEFINE_list(
  "tasks", None, f"Tasks to run, from {sorted(TASKS)} (default: all that apply to the model)."
)
flags.DEFINE_integer(
  "num_samples", None, "Generated samples (default: the config's eval_num_samples)."
)
flags.DEFINE_integer("steps", None, "Langevin steps from noise (default: eval_langevin_steps).")
flags.DEFINE_list(
  "init",
  ["replay", "noise"],
  "Chain starts for sample quality: 'replay' runs the replay buffer's chains on "
  "(under their own labels), 'noise' starts per-class chains from uniform noise.",
)
flags.DEFINE_integer(
  "max_test", None, "Test examples used by classify/histograms/ood (default: the whole split)."
)
flags.DEFINE_list(
  "ood_sets",
  list(SYNTHETIC_SETS),
  "OOD sets for --tasks=ood: uniform, gaussian, constant, inverted, interp, npz:PATH (an .npz "
  "with 'images' uint8 NHWC), tfds:NAME (the test split of a prepared dataset).",
)
flags.DEFINE_string(
  "feature_fn", None, "module:function giving features of float images, for FID/KID."
)
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to evaluate (default: the newest).")
flags.DEFINE_integer("seed", 0, "Evaluation seed.")
FLAGS = flags.FLAGS


def _check_flags(config):
  """Flag errors that need only the checkpoint's config, found before any work is done."""
  try:
    check_tasks(FLAGS.tasks or (), config)
  except ValueError as e:
    raise app.UsageError(f"--tasks: {e}") from e
  bad_init = sorted(set(FLAGS.init) - {"replay", "noise"})
  if bad_init or not FLAGS.init:
    raise app.UsageError(f"--init takes 'replay' and/or 'noise', got {FLAGS.init}")
  if FLAGS.max_test is not None and FLAGS.max_test < 1:
    raise app.UsageError(f"--max_test must be >= 1 (or unset for all), got {FLAGS.max_test}")
  if not FLAGS.ood_sets:
    raise app.UsageError("--ood_sets is empty")
  for spec in FLAGS.ood_sets:
    try:
      check_ood_spec(spec)
    except ValueError as e:
      raise app.UsageError(f"--ood_sets: {e}") from e


def _previous_report(path, step):
  """The report already at ``path`` if it is of the same checkpoint step, else {}."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    report = json.load(f)
  return report if report.get("step") == step else {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  launcher_flags.quiet_library_logs()
  _check_flags(checkpoint.load_config(FLAGS.workdir, FLAGS.checkpoint_step))
  state, config = checkpoint.restore(FLAGS.workdir, FLAGS.checkpoint_step)
  out_dir = os.path.join(FLAGS.workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  ctx = EvalContext(
    state=state,
    config=config,
    out_dir=out_dir,
    seed=FLAGS.seed,
    data_dir=FLAGS.data_dir,
    manual_dir=FLAGS.manual_dir,
    max_test=FLAGS.max_test,
    num_samples=FLAGS.num_samples,
    langevin_steps=FLAGS.steps,
    init=tuple(FLAGS.init),
    feature_fn=FLAGS.feature_fn,
    ood_sets=tuple(FLAGS.ood_sets),
  )
  path = os.path.join(out_dir, "report.json")
  report = _previous_report(path, int(state.step))
  report.update(
    workdir=os.path.abspath(FLAGS.workdir),
    step=int(state.step),
    dataset=config.dataset,
    conditional=config.conditional,
  )
  for task in FLAGS.tasks or default_tasks(config):
    t0 = time.time()
    report[task] = TASKS[task](ctx)
    logging.info("%s (%.1f s): %s", task, time.time() - t0, json.dumps(report[task])[:400])
    files.write_text(path, json.dumps(report, indent=2))  # after every task: nothing lost
  logging.info("Wrote %s", path)


if __name__ == "__main__":
  app.run(main)
