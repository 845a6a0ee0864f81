r"""Evaluates a checkpoint: ``python -m experiments.evaluate --workdir=W`` writes W/eval/report.json.

Tasks (``--tasks``, comma-separated):
  sample_quality  conditional samples from noise scored by a judge classifier trained on the
                  dataset's real training split (accuracy on the conditioned label), FID and KID on
                  judge features (or on a user feature network, --feature_fn=module:function)
  classify        EBM as classifier: argmin_y E(x, y) on the test split (conditional models)
  histograms      energies of train vs test data (PNG + summary)
  ood             AUROC of -E(x) (or -min_y E(x, y)) against uniform noise, constant images and
                  intensity-inverted test images
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from experiments import flags as launcher_flags
from jebm import checkpoint, data, files, generate, viz
from jebm.eval import judge as judge_lib
from jebm.eval import tasks

TASKS = ("sample_quality", "classify", "histograms", "ood")
flags.DEFINE_list("tasks", list(TASKS), f"Tasks to run, from {TASKS}.")
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
flags.DEFINE_integer("max_test", 2000, "Test examples used by classify/histograms/ood.")
flags.DEFINE_string(
  "feature_fn", None, "module:function giving features of float images, for FID/KID."
)
flags.DEFINE_integer("checkpoint_step", None, "Checkpoint to evaluate (default: the newest).")
flags.DEFINE_integer("seed", 0, "Evaluation seed.")
FLAGS = flags.FLAGS


def to_float(images):
  return data.to_float(images) if images.dtype == np.uint8 else images


def sample_quality(state, config, test, out_dir, init):
  """Samples (from noise, per class; or the replay buffer's chains run on), a PNG grid of them,
  and the judge's verdict."""
  num = FLAGS.num_samples or config.eval_num_samples
  labels = None
  if init == "noise" and config.conditional:
    labels = generate.class_labels(config, max(1, num // config.num_classes))
    num = len(labels)
  samples, labels = generate.generate_batched(
    jax.random.key(FLAGS.seed),
    state,
    config,
    num=num,
    labels=labels,
    num_steps=FLAGS.steps,
    init=init,
  )
  samples, labels = np.asarray(samples), None if labels is None else np.asarray(labels)
  shown = samples if labels is None else samples[np.argsort(labels, kind="stable")]
  viz.save_png(
    os.path.join(out_dir, f"samples_{init}.png"),
    viz.image_grid(shown[:: max(1, num // 100)][:100]),
    scale=viz.readable_scale(samples.shape[1]),
  )
  judge, judge_accuracy = judge_lib.load_or_train_judge(
    config.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir
  )
  feature_fn = judge_lib.load_feature_fn(FLAGS.feature_fn) if FLAGS.feature_fn else None
  report = tasks.sample_quality(
    samples, labels, to_float(test["image"]), judge, feature_fn=feature_fn
  )
  return {
    **report,
    "judge_test_accuracy": judge_accuracy,
    "num_samples": num,
    "langevin_steps": FLAGS.steps or config.eval_langevin_steps,
  }


def main(argv):
  del argv
  launcher_flags.quiet_library_logs()
  unknown = sorted(set(FLAGS.tasks) - set(TASKS))
  if unknown:
    raise app.UsageError(f"unknown tasks {unknown}; known: {TASKS}")
  state, config = checkpoint.restore(FLAGS.workdir, FLAGS.checkpoint_step)
  out_dir = os.path.join(FLAGS.workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  load = lambda split: data.arrays(
    config.dataset, split, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir
  )
  train, test = load("train"), load("test")
  test_x = to_float(test["image"][: FLAGS.max_test])
  energy = generate.energy_fn(state, config)
  classes = config.num_classes or None
  report = {
    "workdir": os.path.abspath(FLAGS.workdir),
    "step": int(state.step),
    "dataset": config.dataset,
    "conditional": config.conditional,
  }
  for task in FLAGS.tasks:
    t0 = time.time()
    if task == "sample_quality":
      report[task] = {
        init: sample_quality(state, config, test, out_dir, init) for init in FLAGS.init
      }
    elif task == "classify" and config.conditional:
      report[task] = tasks.classification_accuracy(
        energy, test_x, test["label"][: FLAGS.max_test], config.num_classes
      )
    elif task == "histograms":
      report[task] = tasks.energy_histogram_data(
        energy,
        to_float(train["image"][: FLAGS.max_test]),
        test_x,
        num_classes=classes,
        path=os.path.join(out_dir, "energy_histograms.png"),
      )
    elif task == "ood":
      report[task] = tasks.ood_auroc(
        energy, test_x, rng_key=jax.random.key(FLAGS.seed), num_classes=classes
      )
    else:
      continue
    logging.info("%s (%.1f s): %s", task, time.time() - t0, json.dumps(report[task])[:400])
  path = os.path.join(out_dir, "report.json")
  files.write_text(path, json.dumps(report, indent=2))
  logging.info("Wrote %s", path)


if __name__ == "__main__":
  app.run(main)
