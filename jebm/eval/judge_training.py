"""Training a judge classifier (``jebm.eval.judge``) on a dataset's real images, deterministically."""

import dataclasses
import functools
import logging
from typing import Any, Optional

import jax
import numpy as np
import optax

from jebm.data.pipeline import random_crop
from jebm.eval.judge import (
  Judge,
  as_judge_images,
  judge_net,
  init_judge,
  judge_accuracy,
  judge_config,
)


def _train_step(params, opt_state, images, labels, step, *, augment_key, config, optimizer):
  x = random_crop(
    jax.random.fold_in(augment_key, step), as_judge_images(images, config), config.augment_shift
  )

  def loss_fn(p):
    logits, _ = judge_net(config).apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def _check_split(split, name, num_classes):
  if not isinstance(split, dict) or "image" not in split or "label" not in split:
    raise ValueError(
      f"The judge's {name} data must be a dict with 'image' [N, H, W, C] and"
      f" 'label' [N]; got {type(split).__name__}"
      f" {sorted(split) if isinstance(split, dict) else ''}"
    )
  images, labels = np.asarray(split["image"]), np.asarray(split["label"]).reshape(-1)
  if images.ndim != 4 or len(images) != len(labels) or len(images) == 0:
    raise ValueError(
      f"The judge's {name} data needs images [N, H, W, C] and labels [N] with N ≥ 1;"
      f" got {images.shape} and {labels.shape}"
    )
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
      f"{name} labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
    )
  return images, labels.astype(np.int32)


def train_judge(
  train: dict,
  test: dict,
  *,
  num_classes: int,
  seed: int = 0,
  num_steps: Optional[int] = None,
  batch_size: Optional[int] = None,
  **settings: Any,
):
  """Trains a judge classifier on real data, deterministically.

  Batch k is ``jebm.data.batch_indices(N, batch_size, k, seed=seed)`` (reshuffled every epoch);
  parameters and augmentation are drawn from ``jax.random.key(seed)``. Same data, seed and
  settings give the same judge on the same platform.

  Args:
    train: ``{"image": uint8 [N, H, W, C] (or float in [0, 1]), "label": int [N]}``.
    test: the same for the held-out split, used only for the returned accuracy.
    num_classes: K.
    seed: initialisation, batch order and augmentation seed.
    num_steps, batch_size: training length; None = the default for the image size (the default
      batch size is capped at N).
    **settings: other ``JudgeConfig`` fields (features, strides, hidden, learning_rate,
      augment_shift); None = default.

  Returns:
    (Judge, test accuracy as a float in [0, 1]).
  """
  images, labels = _check_split(train, "train", num_classes)
  test_images, test_labels = _check_split(test, "test", num_classes)
  config = judge_config(
    images.shape[1:], num_classes, num_steps=num_steps, batch_size=batch_size, **settings
  )
  if batch_size is None:
    config = dataclasses.replace(config, batch_size=min(config.batch_size, len(images)))
  key = jax.random.key(seed)
  judge = init_judge(config, jax.random.fold_in(key, 0))
  optimizer = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.num_steps))
  step_fn = jax.jit(
    functools.partial(
      _train_step, augment_key=jax.random.fold_in(key, 1), config=config, optimizer=optimizer
    )
  )
  params, opt_state = judge.params, optimizer.init(judge.params)
  log_every = max(1, config.num_steps // 5)
  for step in range(config.num_steps):
    ids = _batch_indices(len(images), config.batch_size, step, seed)
    params, opt_state, loss = step_fn(params, opt_state, images[ids], labels[ids], np.int32(step))
    if (step + 1) % log_every == 0:
      logging.info("judge step %d/%d: loss %.4f", step + 1, config.num_steps, float(loss))
  judge = Judge(params, config)
  accuracy = judge_accuracy(judge, test_images, test_labels)
  logging.info("judge test accuracy %.4f", accuracy)
  return judge, accuracy


def _batch_indices(num_examples, batch_size, step, seed):
  from jebm.data.pipeline import batch_indices  # jebm.data imports TFDS: only when training.

  return batch_indices(num_examples, batch_size, step, seed=seed, process_index=0, process_count=1)
