"""The judge: a small convnet classifier trained on a dataset's real images, to score samples.

FID, KID and IS are defined on Inception-v3 features, whose weights jebm never downloads. The judge
stands in for it: trained on the real training split with a fixed seed, it gives class
predictions (is a sample conditioned on "7" recognisably a 7?) and penultimate-layer features
(FID/KID between samples and real test images). Judge-based numbers compare models with each
other; they are not comparable with published Inception FIDs. For those, plug in your own feature
network with ``load_feature_fn("your.module:function")``.

    judge, test_accuracy = load_or_train_judge("mnist")   # trained once, cached in the data dir
    logits = judge_logits(judge, images)                  # images float [N, H, W, C] in [0, 1]

Architecture (``JudgeNet``): per stage a 3x3 conv ('SAME', the stage's stride) and ReLU; flatten;
Dense(hidden) and ReLU (the features); Dense(num_classes) (the logits). No batch norm, no dropout:
a pure function of the image. Defaults by image size (``default_judge_config``):
  - up to 16x16 (8x8 digits): widths (32, 64), strides (1, 2), 800 steps of batch 64;
  - larger grey images (28x28 MNIST): widths (32, 64), strides (2, 2), 1500 steps of batch 128;
  - colour images: stride-2 stages of widths 64, 128, ... until the map is at most 8x8, 3000 steps.
  Adam with a cosine-decayed learning rate 2e-3, softmax cross-entropy, no augmentation unless
  ``augment_shift`` > 0 (random translations by up to that many pixels, zero-filled).
"""

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jebm.eval.batching import map_batches
from jebm.files import write_atomically

FeatureFn = Callable[[np.ndarray], np.ndarray]
"""``feature_fn(images float32 [n, H, W, C] in [0, 1]) -> features [n, D]`` (array-like)."""

CACHE_SUBDIR = "jebm_judges"
_CACHE_FORMAT = 1  # Bump when the architecture, training or file layout changes.
_EVAL_BATCH = 500


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  """Judge architecture and training settings (hashable: static under jit).

  Attributes:
    num_classes: K, the number of classes.
    image_shape: (H, W, C) of the images it judges.
    features: conv widths, one per stage.
    strides: conv strides, one per stage.
    hidden: D, the width of the penultimate (feature) layer.
    num_steps: training steps.
    batch_size: training batch size.
    learning_rate: peak Adam learning rate (cosine-decayed to 0 over ``num_steps``).
    augment_shift: random translation of training images by up to this many pixels (0: none).
  """

  num_classes: int
  image_shape: tuple
  features: tuple
  strides: tuple
  hidden: int = 128
  num_steps: int = 1500
  batch_size: int = 128
  learning_rate: float = 2e-3
  augment_shift: int = 0

  def __post_init__(self):
    for name in ("image_shape", "features", "strides"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    if len(self.image_shape) != 3 or min(self.image_shape) < 1:
      raise ValueError(f"JudgeConfig.image_shape must be (H, W, C), got {self.image_shape}")
    if not self.features or len(self.features) != len(self.strides):
      raise ValueError(
        f"JudgeConfig needs one stride per conv stage, got features={self.features}"
        f" and strides={self.strides}"
      )
    positive = dict(
      num_classes=self.num_classes,
      hidden=self.hidden,
      num_steps=self.num_steps,
      batch_size=self.batch_size,
      learning_rate=self.learning_rate,
    )
    bad = {k: v for k, v in positive.items() if not v > 0}
    if bad or min(self.features + self.strides) < 1 or self.augment_shift < 0:
      raise ValueError(
        f"JudgeConfig: sizes, steps and rates must be positive (augment_shift ≥ 0);"
        f" got {bad or dataclasses.asdict(self)}"
      )


def default_judge_config(image_shape: Sequence[int], num_classes: int) -> JudgeConfig:
  """The default judge for images of shape (H, W, C) (see the module docstring)."""
  h, w, c = (int(v) for v in image_shape)
  if max(h, w) <= 16:
    return JudgeConfig(
      num_classes, (h, w, c), features=(32, 64), strides=(1, 2), num_steps=800, batch_size=64
    )
  stages = max(1, math.ceil(math.log2(max(h, w) / 8)))
  base, steps = (32, 1500) if c == 1 else (64, 3000)
  features = tuple(base * 2**i for i in range(stages))
  return JudgeConfig(
    num_classes,
    (h, w, c),
    features=features,
    strides=(2,) * stages,
    hidden=128 if c == 1 else 256,
    num_steps=steps,
    batch_size=128,
  )


def _check_settings(settings):
  """The non-None settings, after checking that each names a trainable JudgeConfig field."""
  known = {f.name for f in dataclasses.fields(JudgeConfig)} - {"num_classes", "image_shape"}
  unknown = sorted(set(settings) - known)
  if unknown:
    raise ValueError(f"Unknown judge settings {unknown}; known: {sorted(known)}")
  return {k: v for k, v in settings.items() if v is not None}


def judge_config(image_shape: Sequence[int], num_classes: int, **overrides: Any) -> JudgeConfig:
  """``default_judge_config`` with the given fields replaced (None values are ignored)."""
  return dataclasses.replace(
    default_judge_config(image_shape, num_classes), **_check_settings(overrides)
  )


class JudgeNet(nn.Module):
  """The judge's network: images [B, H, W, C] in [0, 1] -> (logits [B, K], features [B, D])."""

  features: tuple
  strides: tuple
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x):
    h = x.astype(jnp.float32) - 0.5
    for i, (width, stride) in enumerate(zip(self.features, self.strides)):
      h = nn.relu(nn.Conv(width, (3, 3), strides=stride, name=f"conv_{i}")(h))
    h = h.reshape(h.shape[0], -1)
    feats = nn.relu(nn.Dense(self.hidden, name="hidden")(h))
    return nn.Dense(self.num_classes, name="logits")(feats), feats


@flax.struct.dataclass
class Judge:
  """A trained judge: ``params`` (a pytree of arrays) and its static ``config``."""

  params: Any
  config: JudgeConfig = flax.struct.field(pytree_node=False)


def _net(config: JudgeConfig) -> JudgeNet:
  return JudgeNet(config.features, config.strides, config.hidden, config.num_classes)


def init_judge(config: JudgeConfig, rng_key: jax.Array) -> Judge:
  """A judge with freshly initialised parameters."""
  dummy = jnp.zeros((1,) + config.image_shape, jnp.float32)
  return Judge(_net(config).init(rng_key, dummy)["params"], config)


def _as_images(images, config: JudgeConfig):
  """float32 images in [0, 1]; integer (uint8) images are divided by 255. Checks the shape."""
  images = jnp.asarray(images)
  if jnp.issubdtype(images.dtype, jnp.integer):
    images = images.astype(jnp.float32) / 255.0
  if images.ndim != 4 or images.shape[1:] != config.image_shape:
    raise ValueError(
      f"The judge takes images [N, {', '.join(map(str, config.image_shape))}], got"
      f" shape {images.shape}"
    )
  return images.astype(jnp.float32)


def _apply_batched(judge: Judge, images: jax.Array, batch_size: int):
  net = _net(judge.config)
  return map_batches(
    lambda x: net.apply({"params": judge.params}, x), images, batch_size=batch_size
  )


@functools.cache
def _jitted_apply():
  return jax.jit(_apply_batched, static_argnames="batch_size")


def judge_logits(judge: Judge, images, *, batch_size: int = _EVAL_BATCH) -> jax.Array:
  """Class logits of the judge.

  Args:
    judge: from ``train_judge`` / ``load_or_train_judge``.
    images: [N, H, W, C] float in [0, 1] (uint8 is divided by 255), H, W, C as the judge's.
    batch_size: images per forward pass (bounds memory for large N).

  Returns:
    float32 [N, K] logits.
  """
  return _jitted_apply()(judge, _as_images(images, judge.config), batch_size=batch_size)[0]


def judge_features(judge: Judge, images, *, batch_size: int = _EVAL_BATCH) -> jax.Array:
  """Penultimate-layer features of the judge (for FID/KID); arguments as in `judge_logits`.

  Returns:
    float32 [N, D] non-negative features, D = ``judge.config.hidden``.
  """
  return _jitted_apply()(judge, _as_images(images, judge.config), batch_size=batch_size)[1]


def judge_accuracy(judge: Judge, images, labels, *, batch_size: int = _EVAL_BATCH) -> float:
  """Fraction of images [N, H, W, C] whose argmax logit equals their label [N]."""
  predicted = np.asarray(jnp.argmax(judge_logits(judge, images, batch_size=batch_size), -1))
  return float(np.mean(predicted == np.asarray(labels).reshape(-1)))


def _random_shift(rng_key, images, max_shift):
  """Translates each image [B, H, W, C] by up to ±max_shift pixels, filling with zeros."""
  if max_shift == 0:
    return images
  _, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)))
  offsets = jax.random.randint(rng_key, (images.shape[0], 2), 0, 2 * max_shift + 1)
  crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def _train_step(params, opt_state, images, labels, step, *, augment_key, config, optimizer):
  x = _random_shift(
    jax.random.fold_in(augment_key, step), _as_images(images, config), config.augment_shift
  )

  def loss_fn(p):
    logits, _ = _net(config).apply({"params": p}, x)
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


# --- The on-disk cache ------------------------------------------------------------------------


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
  settings = _check_settings(settings)
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


# --- User feature networks ---------------------------------------------------------------------


def load_feature_fn(spec: str) -> FeatureFn:
  """Imports a user's feature network, e.g. their own Inception-v3 with their own weights.

  Args:
    spec: ``"package.module:function"`` (an importable module) or ``"path/to/file.py:function"``;
      the function may be a dotted attribute (``"module:Class.method"``). It must map images
      float32 [n, H, W, C] in [0, 1] to features [n, D] (see ``apply_feature_fn``).

  Returns:
    The callable.

  Raises:
    ValueError: a spec without exactly one ':' or with an empty part.
    ImportError: the module (or file) cannot be imported.
    AttributeError: the module has no such attribute.
    TypeError: the attribute is not callable.
  """
  module_name, sep, attr = spec.partition(":")
  if not sep or not module_name or not attr or ":" in attr:
    raise ValueError(
      f"Feature network spec {spec!r} must look like 'package.module:function' or"
      " 'path/to/file.py:function'"
    )
  module = _import_module(module_name, spec)
  obj = module
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise AttributeError(
        f"Feature network spec {spec!r}: {module_name} has no attribute {attr!r}"
      )
    obj = getattr(obj, part)
  if not callable(obj):
    raise TypeError(
      f"Feature network spec {spec!r}: {attr!r} is a {type(obj).__name__}, not a"
      " callable images [n, H, W, C] -> features [n, D]"
    )
  return obj


def _import_module(module_name, spec):
  if module_name.endswith(".py"):
    path = Path(module_name).expanduser()
    if not path.is_file():
      raise ImportError(f"Feature network spec {spec!r}: no file {path}")
    name = f"jebm_user_features_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module
  try:
    return importlib.import_module(module_name)
  except ImportError as e:
    raise ImportError(
      f"Feature network spec {spec!r}: cannot import {module_name!r} ({e}); is it on PYTHONPATH?"
    ) from e


def apply_feature_fn(feature_fn: FeatureFn, images, *, batch_size: int = _EVAL_BATCH) -> np.ndarray:
  """Runs a (possibly non-jax) feature network over images in host-side batches.

  Args:
    feature_fn: ``images float32 [n, H, W, C] in [0, 1] -> features [n, D]`` with n ≤ batch_size.
    images: [N, H, W, C] float in [0, 1] (uint8 is divided by 255).
    batch_size: images per call.

  Returns:
    float32 numpy [N, D].
  """
  images = np.asarray(images)
  if np.issubdtype(images.dtype, np.integer):
    images = images.astype(np.float32) / 255.0
  images = images.astype(np.float32)
  chunks = []
  for start in range(0, len(images), batch_size):
    chunk = images[start : start + batch_size]
    feats = np.asarray(feature_fn(chunk), np.float32)
    if feats.ndim != 2 or feats.shape[0] != len(chunk):
      raise ValueError(
        f"feature_fn must return features [n, D] for images [n, ...]; for"
        f" {chunk.shape} it returned shape {feats.shape}"
      )
    chunks.append(feats)
  return np.concatenate(chunks)
