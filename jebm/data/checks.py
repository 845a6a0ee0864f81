"""Checks of data before any work is done: a clear message instead of a NaN loss or a traceback
from deep inside JAX.

    check_dataset_name("mnist")                      # ValueError for a name nothing can read
    check_arrays(arrays, num_classes=10, value_range=(0.0, 1.0), name="dataset 'digits'")
"""

import numpy as np
import tensorflow_datasets as tfds

from jebm.data import loading
from jebm.data.loading import DataError


def check_dataset_name(name: str) -> None:
  """Raises ValueError unless ``name`` is one of jebm's datasets (``JEBM_DATASETS``) or a TFDS
  registry name (``"cifar10"``, ``"imagenet_resized/32x32"``, ``"cifar10:3.0.2"``), optionally
  with an image size (``"imagenet2012@128"``). Nothing is read or prepared: whether the data is
  there is checked when it is loaded."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"a dataset name must be a non-empty string, got {name!r}")
  name, _ = loading.split_image_size(name)
  jebm_cls, _ = loading._jebm_builder_cls(name)  # ValueError for an unknown jebm config
  if jebm_cls is not None:
    return
  base = name.partition("/")[0].partition(":")[0]
  if base not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(
      f"unknown dataset {name!r}: not one of jebm's datasets {loading.JEBM_DATASETS} and not in "
      "the TFDS registry (tfds.list_builders())"
    )


def check_arrays(arrays, *, num_classes: int = 0, value_range=None, name: str = "data") -> None:
  """Raises DataError for in-memory data a run cannot train on.

  Args:
    arrays: {"image": [N, ...] uint8 images (0..255) or float data, "label": optional [N] class
      ids}, as ``jebm.data.arrays`` returns.
    num_classes: K > 0: labels must be there, ints in [0, K); 0: labels are not used (unchecked).
    value_range: (low, high) the model's inputs must lie in (the sampler's [x_min, x_max]): float
      data as it is, uint8 images as x / 255; None: unchecked.
    name: how messages name the data, e.g. "dataset 'mnist' (train split)".
  """
  if "image" not in arrays:
    raise DataError(f"{name} has no 'image' array (keys: {sorted(arrays)})")
  x = np.asarray(arrays["image"])
  if x.ndim < 2 or len(x) == 0:
    raise DataError(f"{name}: 'image' must be [N, ...] with N >= 1 examples, got shape {x.shape}")
  if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
    raise DataError(
      f"{name}: 'image' has dtype {x.dtype}; expected uint8 images (0..255) or float data"
    )
  if x.dtype != np.uint8:
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
      raise DataError(
        f"{name}: {int(bad.sum())} examples hold NaN or infinite values (the first: example "
        f"{int(np.argmax(bad))})"
      )
  if value_range is not None:
    _check_range(x, value_range, name)
  if num_classes > 0:
    _check_labels(arrays, len(x), num_classes, name)


def _check_range(x: np.ndarray, value_range, name: str) -> None:
  """DataError when data x (uint8 as x / 255) leaves value_range = (low, high)."""
  low, high = value_range
  scale = 255.0 if x.dtype == np.uint8 else 1.0
  x_lo, x_hi = float(x.min()) / scale, float(x.max()) / scale
  if x_lo < low or x_hi > high:
    raise DataError(
      f"{name}: values span [{x_lo:g}, {x_hi:g}]"
      + (" (uint8 images, as x / 255)" if scale != 1.0 else "")
      + f", outside the range [x_min, x_max] = [{low:g}, {high:g}] that samples are clamped to: "
      "the sampler could never reach the data; rescale the data or widen --x_min/--x_max"
    )


def _check_labels(arrays, num_examples: int, num_classes: int, name: str) -> None:
  """DataError unless arrays["label"] holds num_examples int class ids in [0, num_classes)."""
  if "label" not in arrays:
    raise DataError(f"{name} has no labels; a conditional model needs them: set --num_classes=0")
  y = np.asarray(arrays["label"])
  if y.shape != (num_examples,):
    raise DataError(f"{name}: labels must be [N] = [{num_examples}], got shape {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise DataError(f"{name}: labels must be int class ids, got dtype {y.dtype}")
  bad = (y < 0) | (y >= num_classes)
  if bad.any():
    first = int(np.argmax(bad))
    raise DataError(
      f"{name}: {int(bad.sum())} labels lie outside [0, num_classes) = [0, {num_classes}) (the "
      f"first: {int(y[first])} in example {first}; labels span [{int(y.min())}, {int(y.max())}]): "
      "set --num_classes to the number of classes"
    )
