"""Class-incremental split MNIST: the label-contrastive EBM against a fine-tuned softmax classifier
and an offline upper bound, all on the same network, over several seeds (``jebm.continual``).

    python -m experiments.continual --workdir=W [--seeds=5] [--learners=ebm,softmax_finetune,offline]

writes ``W/continual.json`` (``{learner: {"final_mean", "final_std", "after_task", ...}}``),
``W/settings.json``, ``W/continual.md`` (the table, mean +- std over seeds) and ``W/continual.png``
(the mean accuracy after each task).
Accuracy after task t is on the test images of the classes seen so far (argmin over them); the
final one covers all 10 classes.
"""

import dataclasses
import json
import os
import time

import numpy as np
from absl import app, flags, logging

from experiments import flags as launcher_flags
from jebm import continual, files, viz

flags.DEFINE_integer("seeds", 5, "Seeds 0..seeds-1; each trains every learner.", lower_bound=1)
flags.DEFINE_list("learners", list(continual.LEARNERS), f"Learners, from {continual.LEARNERS}.")
flags.DEFINE_string("dataset", "mnist", "Dataset with int labels (mnist, digits).")
flags.DEFINE_integer(
  "num_tasks", 5, "Tasks of equal numbers of consecutive classes.", lower_bound=1
)
flags.DEFINE_integer(
  "validation",
  0,
  "Hold out the last N training examples and report on them instead of the test split (to "
  "choose settings without looking at the test set); 0 = test split.",
  lower_bound=0,
)
HELP = {
  "hidden_size": "Width of the network's hidden layer.",
  "cond_gain_init_std": "Std of the random init of the per-class gains.",
  "steps_per_task": "Optimiser steps per task of the continual learners.",
  "offline_steps": "Optimiser steps of the offline upper bound.",
  "batch_size": "Examples per step.",
  "learning_rate": "Adam's learning rate, continual learners.",
  "offline_learning_rate": "Adam's learning rate, offline upper bound.",
}
for _field in dataclasses.fields(continual.ContinualConfig):
  _define = flags.DEFINE_integer if isinstance(_field.default, int) else flags.DEFINE_float
  _define(_field.name, _field.default, HELP[_field.name])
FLAGS = flags.FLAGS
# Published numbers for this protocol, for the table (Hsu et al. 2018; Du & Mordatch 2019).
PUBLISHED = {"ebm": "64.99 +- 4.27 (IGEBM)", "softmax_finetune": "19.7 (Adam)", "offline": "97.5"}


def check_flags() -> continual.ContinualConfig:
  """UsageError naming the flag for a bad value; the settings otherwise."""
  launcher_flags.check_path_flags()
  launcher_flags.check_nonempty_lists(("learners",))
  from jebm.data.checks import check_dataset_name

  try:
    check_dataset_name(FLAGS.dataset)
  except ValueError as e:
    raise app.UsageError(f"--dataset: {e}") from e
  unknown = sorted(set(FLAGS.learners) - set(continual.LEARNERS))
  if unknown or not FLAGS.learners:
    raise app.UsageError(f"--learners: unknown {unknown}; known: {continual.LEARNERS}")
  try:
    return continual.ContinualConfig(
      **{f.name: FLAGS[f.name].value for f in dataclasses.fields(continual.ContinualConfig)}
    )
  except ValueError as e:
    raise app.UsageError(f"--{e}") from e


def load_split(name: str) -> dict:
  """{"image": float32 [N, D] in [0, 1], "label": int32 [N]} of the dataset's split."""
  from jebm import data  # TFDS is imported only when data is needed

  arrays = data.arrays(FLAGS.dataset, name, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir)
  images = arrays["image"].reshape(len(arrays["image"]), -1).astype(np.float32)
  if arrays["image"].dtype == np.uint8:
    images /= 255.0
  return {"image": images, "label": arrays["label"].astype(np.int32)}


def summarise(per_seed: list, seconds: float) -> dict:
  """Mean and std over seeds of a learner's per-seed results (``train_learner``'s)."""
  after = np.array([r["after_task"] for r in per_seed])
  after_all = np.array([r["after_task_all_classes"] for r in per_seed])
  return {
    "final_mean": float(after[:, -1].mean()),
    "final_std": float(after[:, -1].std()),
    "after_task": after.mean(0).tolist(),
    "after_task_std": after.std(0).tolist(),
    "after_task_all_classes": after_all.mean(0).tolist(),
    "per_seed": after.tolist(),
    "seconds": seconds,
  }


def markdown_table(results: dict, num_tasks: int) -> str:
  """The table of continual.md: accuracy (%) after each task and at the end, mean +- std."""
  head = [f"after task {t + 1}" for t in range(num_tasks)]
  lines = [
    "| learner | " + " | ".join(head) + " | published |",
    "| --- " * (num_tasks + 2) + "|",
  ]
  for name, r in results.items():
    cells = [
      f"{100 * m:.2f} +- {100 * s:.2f}" for m, s in zip(r["after_task"], r["after_task_std"])
    ]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {PUBLISHED.get(name, '')} |")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = check_flags()
  launcher_flags.quiet_library_logs()
  train, test = load_split("train"), load_split("test")
  if FLAGS.validation:
    if FLAGS.validation >= len(train["label"]):
      raise app.UsageError(
        f"--validation={FLAGS.validation} leaves no training examples (the split has "
        f"{len(train['label'])})"
      )
    cut = len(train["label"]) - FLAGS.validation
    train, test = ({k: v[:cut] for k, v in train.items()}, {k: v[cut:] for k, v in train.items()})
  num_classes = int(train["label"].max()) + 1
  try:
    tasks = continual.class_incremental_tasks(num_classes, FLAGS.num_tasks)
  except ValueError as e:
    raise app.UsageError(f"--num_tasks: {e}") from e
  results = {}
  for learner in FLAGS.learners:
    t0, per_seed = time.time(), []
    for seed in range(FLAGS.seeds):
      per_seed.append(continual.train_learner(learner, tasks, train, test, config, seed=seed))
      logging.info("%s seed %d: after each task %s", learner, seed, per_seed[-1]["after_task"])
    results[learner] = summarise(per_seed, time.time() - t0)
    logging.info(
      "%s: final %.4f +- %.4f (%.0f s)",
      learner,
      results[learner]["final_mean"],
      results[learner]["final_std"],
      results[learner]["seconds"],
    )
  settings = {**dataclasses.asdict(config), "dataset": FLAGS.dataset, "tasks": tasks}
  settings.update(seeds=FLAGS.seeds, evaluated_on="validation" if FLAGS.validation else "test")
  os.makedirs(FLAGS.workdir, exist_ok=True)
  files.write_text(os.path.join(FLAGS.workdir, "continual.json"), json.dumps(results, indent=2))
  files.write_text(os.path.join(FLAGS.workdir, "settings.json"), json.dumps(settings, indent=2))
  files.write_text(os.path.join(FLAGS.workdir, "continual.md"), markdown_table(results, len(tasks)))
  tasks_axis = list(range(1, len(tasks) + 1))
  viz.save_curves(
    os.path.join(FLAGS.workdir, "continual.png"),
    {name: (tasks_axis, r["after_task"]) for name, r in results.items()},
    title=f"class-incremental {FLAGS.dataset}, {FLAGS.seeds} seeds",
    xlabel="tasks learned",
    ylabel="accuracy on the classes seen so far",
    ylim=(0, 1),
  )
  print(markdown_table(results, len(tasks)))


if __name__ == "__main__":
  app.run(main)
