"""User feature networks for FID/KID, e.g. Inception-v3 with the user's own weights.

    feature_fn = load_feature_fn("my_package.inception:features")  # or "path/file.py:features"
    feats = apply_feature_fn(feature_fn, images)                      # [N, D], in host batches

Only the module the user names is imported; nothing is downloaded.
"""

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from jebm.eval.batching import IMAGES_PER_CALL

FeatureFn = Callable[[np.ndarray], np.ndarray]
"""``feature_fn(images float32 [n, H, W, C] in [0, 1]) -> features [n, D]`` (array-like)."""


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


def apply_feature_fn(
  feature_fn: FeatureFn, images, *, batch_size: int = IMAGES_PER_CALL
) -> np.ndarray:
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
