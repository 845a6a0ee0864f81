"""Trained judges kept in the data dir, so that every evaluation of a dataset uses the same one.

``load_or_train_judge("mnist")`` loads ``<data_dir>/jebm_judges/mnist_seed0.npz`` or trains and
writes it. Files are ``.npz`` (parameters plus JSON metadata, no pickles), written atomically.
"""

import dataclasses
import hashlib
import json
import logging
import os
import re
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jebm.eval.judge import Judge, JudgeConfig, check_judge_settings, init_judge
from jebm.eval.judge_training import train_judge
from jebm.files import write_atomically

CACHE_SUBDIR = "jebm_judges"
_CACHE_FORMAT = 1  # Bump when the architecture, training or file layout changes.


def _normalise(value):
  return list(value) if isinstance(value, (tuple, list)) else value


def judge_cache_path(dataset_name: str, *, data_dir=None, seed: int = 0, **settings: Any) -> str:
  """Where `load_or_train_judge` caches a judge: ``<data_dir>/jebm_judges/<name>_seed<seed>.npz``.

  Non-default ``settings`` (JudgeConfig fields; None values ignored) add a short hash of themselves
  to the name, so judges with different settings do not overwrite each other.
  """
  if data_dir is None:
    from jebm.data.loading import default_data_dir

    data_dir = default_data_dir()
  settings = {k: _normalise(v) for k, v in sorted(settings.items()) if v is not None}
  name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_name) + f"_seed{seed}"
  if settings:
    name += "_" + hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
  return os.path.join(os.fspath(data_dir), CACHE_SUBDIR, name + ".npz")


def save_judge(path, judge: Judge, *, test_accuracy: float, metadata: Optional[dict] = None):
  """Writes a judge to ``path`` (.npz: parameters plus JSON metadata), atomically."""
  meta = dict(
    metadata or {},
    format=_CACHE_FORMAT,
    config=dataclasses.asdict(judge.config),
    test_accuracy=float(test_accuracy),
  )
  flat = traverse_util.flatten_dict(jax.device_get(judge.params), sep="/")
  arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
  return write_atomically(
    path, lambda tmp: np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
  )


def load_judge(path):
  """Reads a judge written by `save_judge`.

  Returns:
    (Judge, test accuracy, metadata dict).

  Raises:
    ValueError: a file of another format version, or parameters that do not fit the config.
  """
  with np.load(os.fspath(path), allow_pickle=False) as f:
    meta = json.loads(str(f["meta"]))
    flat = {k.removeprefix("params/"): f[k] for k in f.files if k.startswith("params/")}
  if meta.get("format") != _CACHE_FORMAT:
    raise ValueError(f"{path}: judge file format {meta.get('format')}, expected {_CACHE_FORMAT}")
  config = JudgeConfig(**meta["config"])
  params = jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat, sep="/"))
  shapes = jax.eval_shape(lambda: init_judge(config, jax.random.key(0)).params)
  same = jax.tree.structure(shapes) == jax.tree.structure(params) and all(
    a.shape == b.shape for a, b in zip(jax.tree.leaves(shapes), jax.tree.leaves(params))
  )
  if not same:
    raise ValueError(f"{path}: stored parameters do not match the judge architecture {config}")
  return Judge(params, config), float(meta["test_accuracy"]), meta


def _load_compatible(path, dataset_name, seed, settings):
  """The cached (judge, accuracy) if ``path`` holds one trained as asked, else None."""
  if not os.path.exists(path):
    return None
  try:
    judge, accuracy, meta = load_judge(path)
  except (OSError, ValueError, KeyError, TypeError) as e:
    logging.warning("Ignoring unreadable judge cache %s (%s); retraining", path, e)
    return None
  stored = dataclasses.asdict(judge.config)
  wanted = dict(dataset=dataset_name, seed=seed)
  mismatch = {k: (meta.get(k), v) for k, v in wanted.items() if meta.get(k) != v}
  mismatch.update(
    {k: (stored[k], v) for k, v in settings.items() if _normalise(stored[k]) != _normalise(v)}
  )
  if mismatch:
    logging.warning("Judge cache %s was trained differently %s; retraining", path, mismatch)
    return None
  return judge, accuracy


def load_or_train_judge(
  dataset_name: str,
  *,
  data_dir=None,
  seed: int = 0,
  manual_dir=None,
  num_classes: Optional[int] = None,
  **settings: Any,
):
  """The judge for a dataset: loaded from the cache if there, else trained and cached.

  The cache is `judge_cache_path(dataset_name, data_dir=..., seed=..., **settings)`, written
  atomically with the test accuracy and the full `JudgeConfig`; a cached judge is used only if its
  dataset, seed and every explicitly given setting match.

  Args:
    dataset_name: a ``jebm.data`` name with labelled images ("digits", "mnist", "cifar10", ...).
    data_dir: the data dir (default ``jebm.data.default_data_dir()``); the data is read with
      ``jebm.data.arrays(dataset_name, "train" / "test", data_dir=data_dir)``.
    seed: training seed.
    manual_dir: passed to ``jebm.data.arrays`` (for MNIST's IDX files).
    num_classes: K; default max label + 1.
    **settings: JudgeConfig fields for `train_judge` (num_steps, batch_size, features, ...).

  Returns:
    (Judge, test accuracy).
  """
  import jebm.data  # TFDS is imported only when data is needed.

  data_dir = os.fspath(data_dir) if data_dir is not None else jebm.data.default_data_dir()
  settings = check_judge_settings(settings)
  path = judge_cache_path(dataset_name, data_dir=data_dir, seed=seed, **settings)
  wanted = settings if num_classes is None else dict(settings, num_classes=num_classes)
  cached = _load_compatible(path, dataset_name, seed, wanted)
  if cached is not None:
    logging.info("Loaded judge %s (test accuracy %.4f)", path, cached[1])
    return cached
  train, test = (
    jebm.data.arrays(dataset_name, split, data_dir=data_dir, manual_dir=manual_dir)
    for split in ("train", "test")
  )
  if "label" not in train or np.ndim(train["image"]) != 4:
    raise ValueError(
      f"Dataset {dataset_name!r} has no labelled images [N, H, W, C]; a judge needs both"
    )
  if num_classes is None:
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
  logging.info("Training a judge on %s (no cache at %s)", dataset_name, path)
  judge, accuracy = train_judge(train, test, num_classes=num_classes, seed=seed, **settings)
  save_judge(path, judge, test_accuracy=accuracy, metadata=dict(dataset=dataset_name, seed=seed))
  return judge, accuracy
