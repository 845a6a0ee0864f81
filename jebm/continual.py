"""Class-incremental continual learning: tasks of disjoint classes, trained one after the other,
no data kept from earlier tasks; prediction is argmin_y E(x, y) over the classes seen so far.

Learners (all on the same network, a conditional energy E(x, y); only the objective differs):
  ebm               the label-contrastive energy of Li et al. (2020): cross-entropy of
                    softmax_y(-E(x, y)) over the *current task's* classes only, so training a new
                    task never pushes the energies of earlier classes up;
  softmax_finetune  the usual single-head classifier fine-tuned task after task: cross-entropy
                    over all K classes (it forgets earlier classes: Hsu et al. 2018 report 19.7%
                    on split MNIST);
  offline           the upper bound: cross-entropy over all K classes on all tasks' data at once,
                    trained for ``offline_steps``.

    tasks = class_incremental_tasks(num_classes=10, num_tasks=5)   # ((0, 1), (2, 3), ...)
    result = train_learner("ebm", tasks, train, test, ContinualConfig(), seed=0)
    result["after_task"]   # accuracy on the test images of the classes seen after each task
"""

import dataclasses
import functools
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jebm.energy import class_energy_table
from jebm.eval.batching import map_host_chunks
from jebm.eval.energies import chunk_size
from jebm.models.mlp import MLPEnergy

LEARNERS = ("ebm", "softmax_finetune", "offline")
Tasks = Tuple[Tuple[int, ...], ...]


@dataclasses.dataclass(frozen=True)
class ContinualConfig:
  """Settings shared by all learners; validated on construction (messages name the field, which is
  also the ``experiments/continual.py`` flag).

  Attributes:
    hidden_size: width of the network's hidden layer (one layer, ReLU, per-class gains).
    cond_gain_init_std: std of the random init of the per-class gains (a multiple of
      1 / sqrt(hidden_size) keeps classes apart from the start, as Li et al.'s unit embeddings).
    steps_per_task: optimiser steps per task of the continual learners.
    offline_steps: optimiser steps of the offline upper bound (on all tasks' data).
    batch_size: examples per step.
    learning_rate: Adam's, for the continual learners.
    offline_learning_rate: Adam's, for the offline upper bound (trained to convergence).
  """

  hidden_size: int = 1000
  cond_gain_init_std: float = 1.0 / np.sqrt(1000)
  steps_per_task: int = 300
  offline_steps: int = 6000
  batch_size: int = 128
  learning_rate: float = 1e-4
  offline_learning_rate: float = 1e-3

  def __post_init__(self):
    for name in ("hidden_size", "steps_per_task", "offline_steps", "batch_size"):
      value = getattr(self, name)
      if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for name in ("learning_rate", "offline_learning_rate", "cond_gain_init_std"):
      value = getattr(self, name)
      if not (np.isfinite(value) and value >= 0) or (name.endswith("learning_rate") and value == 0):
        raise ValueError(f"{name} must be a finite number > 0 (>= 0 for the std), got {value!r}")


def class_incremental_tasks(num_classes: int = 10, num_tasks: int = 5) -> Tasks:
  """The split into ``num_tasks`` tasks of consecutive classes, e.g. ((0, 1), ..., (8, 9))."""
  if num_tasks < 1 or num_classes % num_tasks:
    raise ValueError(
      f"{num_classes} classes do not split into {num_tasks} tasks of equal size "
      "(num_classes must be a multiple of num_tasks >= 1)"
    )
  size = num_classes // num_tasks
  return tuple(tuple(range(t * size, (t + 1) * size)) for t in range(num_tasks))


def check_tasks(tasks: Sequence[Sequence[int]], num_classes: int) -> Tasks:
  """``tasks`` as a tuple of tuples; ValueError unless they partition 0..num_classes-1 (each
  class in exactly one task, no task empty)."""
  tasks = tuple(tuple(int(c) for c in task) for task in tasks)
  flat = [c for task in tasks for c in task]
  problems = []
  if not tasks or any(not task for task in tasks):
    problems.append("a task without classes")
  if len(flat) != len(set(flat)):
    problems.append(
      f"classes in more than one task: {sorted({c for c in flat if flat.count(c) > 1})}"
    )
  if set(flat) - set(range(num_classes)):
    problems.append(
      f"classes outside 0..{num_classes - 1}: {sorted(set(flat) - set(range(num_classes)))}"
    )
  if set(range(num_classes)) - set(flat):
    problems.append(f"classes in no task: {sorted(set(range(num_classes)) - set(flat))}")
  if problems:
    raise ValueError(
      f"the task split {tasks} does not cover the {num_classes} classes: " + "; ".join(problems)
    )
  return tasks


def seen_classes(tasks: Tasks, task_index: int) -> Tuple[int, ...]:
  """The classes of tasks 0..task_index, sorted."""
  return tuple(sorted(c for task in tasks[: task_index + 1] for c in task))


def class_mask(classes: Sequence[int], num_classes: int) -> np.ndarray:
  """bool [K]: True for ``classes``."""
  mask = np.zeros(num_classes, bool)
  mask[list(classes)] = True
  return mask


def accuracy_over(energies: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> float:
  """Accuracy of argmin over ``classes`` of energies [N, K] on the examples whose label is in
  ``classes`` (the usual "average accuracy over the tasks seen so far")."""
  allowed = class_mask(classes, energies.shape[1])
  keep = allowed[labels]
  predicted = np.where(allowed, energies, np.inf)[keep].argmin(axis=1)
  return float(np.mean(predicted == labels[keep]))


def build_network(config: ContinualConfig, num_classes: int) -> MLPEnergy:
  """The network every learner trains: E(x [B, D], y int [B]) -> [B]."""
  return MLPEnergy(
    hidden_sizes=(config.hidden_size,),
    activation="relu",
    num_classes=num_classes,
    cond_gain_init_std=config.cond_gain_init_std,
  )


def contrastive_loss(energies: jax.Array, labels: jax.Array, allowed: jax.Array) -> jax.Array:
  """Mean cross-entropy of softmax_y(-E(x, y)) over the classes where ``allowed`` [K] is True;
  energies [B, K], labels [B] (each label must be allowed)."""
  logits = jnp.where(allowed, -energies, -jnp.inf)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def energy_table(network: MLPEnergy, params, x: jax.Array, num_classes: int) -> jax.Array:
  """E(x, y) [B, K] of x [B, D] under every class (``jebm.energy.class_energy_table``)."""
  return class_energy_table(lambda x, y: network.apply({"params": params}, x, y), x, num_classes)


def make_step(network: MLPEnergy, optimizer: optax.GradientTransformation, num_classes: int):
  """A jitted ``step(params, opt_state, x [B, D], y [B], allowed bool [K]) -> (params, opt_state,
  loss)``: one optimiser step of ``contrastive_loss`` over the allowed classes."""

  def loss_fn(params, x, y, allowed):
    return contrastive_loss(energy_table(network, params, x, num_classes), y, allowed)

  @jax.jit
  def step(params, opt_state, x, y, allowed):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, allowed)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def task_data(data: Dict[str, np.ndarray], classes: Sequence[int]) -> Dict[str, np.ndarray]:
  """A copy of the examples of ``data`` ({"image": [N, D], "label": [N]}) whose label is in
  ``classes``: all a learner gets to read during a task."""
  keep = np.isin(data["label"], list(classes))
  return {k: v[keep].copy() for k, v in data.items()}


def train_learner(
  learner: str,
  tasks: Tasks,
  train: Dict[str, np.ndarray],
  test: Dict[str, np.ndarray],
  config: ContinualConfig,
  *,
  seed: int,
  on_batch: Optional[Callable[[int, np.ndarray], None]] = None,
) -> dict:
  """Trains one learner through the tasks and tests it after each.

  Args:
    learner: one of LEARNERS.
    tasks: the split (``check_tasks``).
    train, test: {"image": float32 [N, D], "label": int [N]}.
    config: ContinualConfig.
    seed: initialisation and batch order.
    on_batch: optional ``on_batch(task_index, labels [B])`` called with every batch read (tests
      use it to check that no earlier task's data is read).

  Returns:
    ``{"after_task": [T] accuracies on the test images of the classes seen so far,
    "after_task_all_classes": [T] accuracies on the whole test set}`` (offline: one entry, after
    training on all tasks at once, repeated T times so curves line up).
  """
  if learner not in LEARNERS:
    raise ValueError(f"unknown learner {learner!r}; known: {LEARNERS}")
  num_classes = sum(len(task) for task in tasks)
  tasks = check_tasks(tasks, num_classes)
  network = build_network(config, num_classes)
  key = jax.random.PRNGKey(seed)
  params = network.init(key, train["image"][:1], train["label"][:1].astype(np.int32))["params"]
  offline = learner == "offline"
  optimizer = optax.adam(config.offline_learning_rate if offline else config.learning_rate)
  opt_state = optimizer.init(params)
  step = make_step(network, optimizer, num_classes)
  test_table = jax.jit(lambda p, x: energy_table(network, p, x, num_classes))  # compiled once
  rng = np.random.default_rng(seed)
  schedule = (
    [(tuple(range(num_classes)), config.offline_steps)]
    if offline
    else [(t, config.steps_per_task) for t in tasks]
  )
  after, after_all = [], []
  for index, (classes, num_steps) in enumerate(schedule):
    data = task_data(train, classes)
    allowed = class_mask(classes if learner == "ebm" else range(num_classes), num_classes)
    for _ in range(num_steps):
      batch = rng.integers(0, len(data["label"]), config.batch_size)
      labels = data["label"][batch].astype(np.int32)
      assert np.isin(labels, classes).all(), "a batch holds data of another task"
      if on_batch is not None:
        on_batch(index, labels)
      params, opt_state, _ = step(params, opt_state, data["image"][batch], labels, allowed)
    energies = map_host_chunks(
      functools.partial(test_table, params), test["image"], batch_size=chunk_size(num_classes)
    )
    seen = classes if offline else seen_classes(tasks, index)
    after.append(accuracy_over(energies, test["label"], seen))
    after_all.append(after[-1] * float(np.isin(test["label"], seen).mean()))  # unseen = wrong
  if offline:
    after, after_all = after * len(tasks), after_all * len(tasks)
  return {"after_task": after, "after_task_all_classes": after_all}
