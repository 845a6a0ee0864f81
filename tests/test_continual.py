"""Class-incremental learning (jebm.continual, experiments/continual.py): the task split, the
"classes seen so far" rule, that no learner reads an earlier task's data, and the learners'
known behaviour on a synthetic problem (the fine-tuned softmax forgets the first task)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jebm import continual

ROOT = Path(__file__).resolve().parents[1]
TINY = continual.ContinualConfig(
  hidden_size=32, steps_per_task=60, offline_steps=120, batch_size=32, learning_rate=3e-3
)


def test_task_split_and_classes_seen_so_far():
  tasks = continual.class_incremental_tasks(10, 5)
  assert tasks == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
  assert continual.seen_classes(tasks, 0) == (0, 1)
  assert continual.seen_classes(tasks, 2) == (0, 1, 2, 3, 4, 5)
  assert continual.check_tasks([[1, 0], [2, 3]], 4) == ((1, 0), (2, 3))
  with pytest.raises(ValueError, match="do not split into 3 tasks"):
    continual.class_incremental_tasks(10, 3)
  for tasks, problem in [
    ([[0, 1], [1, 2]], "classes in more than one task: \\[1\\]"),
    ([[0, 1]], "classes in no task: \\[2\\]"),
    ([[0, 1, 2], [3]], "classes outside 0..2: \\[3\\]"),
    ([[0, 1, 2], []], "a task without classes"),
  ]:
    with pytest.raises(ValueError, match="does not cover the 3 classes.*" + problem):
      continual.check_tasks(tasks, 3)


def test_accuracy_is_argmin_over_the_seen_classes_on_their_images():
  energies = np.array([[0.0, 1.0, -5.0], [2.0, 1.0, -5.0], [3.0, 0.0, 9.0], [0.0, 9.0, 9.0]])
  labels = np.array([0, 0, 1, 2])
  # Seen (0, 1): class 2's low energies are ignored and its image is not counted.
  assert continual.accuracy_over(energies, labels, (0, 1)) == pytest.approx(2 / 3)
  assert continual.accuracy_over(energies, labels, (0, 1, 2)) == pytest.approx(1 / 4)


def _blobs(n_per_class, seed, num_classes=4, dim=16):
  rng = np.random.default_rng(seed)
  means = np.random.default_rng(0).uniform(0, 1, (num_classes, dim))
  labels = np.repeat(np.arange(num_classes), n_per_class).astype(np.int32)
  images = means[labels] + 0.05 * rng.normal(size=(len(labels), dim))
  return {"image": images.astype(np.float32), "label": labels}


@pytest.fixture(scope="module")
def results():
  train, test = _blobs(100, seed=1), _blobs(50, seed=2)
  tasks = continual.class_incremental_tasks(4, 2)
  read = {learner: [] for learner in continual.LEARNERS}
  out = {
    learner: continual.train_learner(
      learner,
      tasks,
      train,
      test,
      TINY,
      seed=0,
      on_batch=lambda task, labels, learner=learner: read[learner].append((task, set(labels))),
    )
    for learner in continual.LEARNERS
  }
  return tasks, read, out


def test_no_learner_reads_an_earlier_tasks_data(results):
  tasks, read, _ = results
  for learner in ("ebm", "softmax_finetune"):
    assert [t for t, _ in read[learner]] == [0] * 60 + [1] * 60
    for task, labels in read[learner]:
      assert labels <= set(tasks[task]), (learner, task, labels)
  assert {c for _, labels in read["offline"] for c in labels} == {0, 1, 2, 3}


def test_softmax_forgets_the_first_task_and_the_ebm_and_offline_do_not(results):
  _, _, out = results
  for learner in continual.LEARNERS:
    assert out[learner]["after_task"][0] == 1.0, learner  # two separable blobs
  # After task 2 the fine-tuned softmax calls every image a task-2 class: half the images.
  assert out["softmax_finetune"]["after_task"][1] == pytest.approx(0.5)
  assert out["ebm"]["after_task"][1] >= 0.75  # measured 0.8: it forgets some, not all
  assert out["offline"]["after_task"] == [1.0, 1.0]
  # Over all classes, the first task alone is half of the test set.
  assert out["ebm"]["after_task_all_classes"][0] == pytest.approx(0.5)


def test_bad_settings_are_clear_errors():
  with pytest.raises(ValueError, match="steps_per_task must be an int >= 1"):
    continual.ContinualConfig(steps_per_task=0)
  with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
    continual.ContinualConfig(learning_rate=float("nan"))
  with pytest.raises(ValueError, match="unknown learner 'ewc'"):
    continual.train_learner("ewc", ((0,),), _blobs(2, 0, 1), _blobs(2, 0, 1), TINY, seed=0)


def test_launcher_writes_the_table_json_and_png_on_digits(tmp_path):
  env = dict(os.environ, JEBM_DATA_DIR=str(tmp_path / "data"), JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "experiments.continual", f"--workdir={tmp_path / 'w'}"]
  tiny = ["--dataset=digits", "--seeds=2", "--steps_per_task=20", "--offline_steps=40"]
  result = subprocess.run(
    command + tiny + ["--hidden_size=32"], cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "w" / "continual.json").read_text())
  assert set(report) == set(continual.LEARNERS)
  for learner, r in report.items():
    assert len(r["after_task"]) == 5 and len(r["per_seed"]) == 2, learner
    assert r["final_mean"] == pytest.approx(np.mean([s[-1] for s in r["per_seed"]]))
    assert 0 <= r["final_std"] and 0 < r["final_mean"] <= 1
  assert (tmp_path / "w" / "continual.png").stat().st_size > 0
  assert "| ebm |" in (tmp_path / "w" / "continual.md").read_text()
  bad = subprocess.run(
    command + ["--dataset=digits", "--num_tasks=3"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
  )
  assert bad.returncode != 0
  assert "--num_tasks: 10 classes do not split into 3 tasks" in bad.stderr.strip().splitlines()[-1]
