"""Reading datasets as random-access sources or in-memory arrays, without TensorFlow.

Names: jebm's own datasets (`JEBM_DATASETS`: prepared on first use from embedded or local data)
or any TFDS registry name (``cifar10``, ``svhn_cropped``, ``downsampled_imagenet/32x32``, ...),
which is only read: it must already be prepared in ArrayRecord format, once, with
``tfds build NAME --file_format=array_record --data_dir=DIR`` (the one step that needs TensorFlow).
Nothing here downloads anything.

A name may end in ``@SIZE`` (``"imagenet2012@128"``): every image is then resized so that its
short side is SIZE and its central SIZE x SIZE is kept (`jebm.data.resize`), which is how
datasets of varying image size are read.

Data dir: the ``data_dir`` argument, else $JEBM_DATA_DIR, else $TFDS_DATA_DIR, else
``~/tensorflow_datasets``.
"""

import functools
import os
from pathlib import Path
from typing import Optional, Tuple

import grain
import numpy as np
import tensorflow_datasets as tfds

from jebm.data.builders import JebmDigits, JebmDsprites, JebmMnist, JebmToy2d, JebmTrajectories
from jebm.data.builders import find_mnist_files
from jebm.data.builders.mnist import MNIST_ENV_VAR
from jebm.data import resize, toy2d, trajectories

JEBM_DATASETS = (
  ("digits", "mnist", "dsprites", "dsprites/deepmind")
  + tuple(f"toy2d/{n}" for n in toy2d.NAMES)
  + tuple(f"trajectories/{n}" for n in trajectories.ENVS)
)
_JEBM_BUILDERS = {
  "digits": JebmDigits,
  "mnist": JebmMnist,
  "dsprites": JebmDsprites,
  "toy2d": JebmToy2d,
  "trajectories": JebmTrajectories,
}
_READ_CHUNK = 8192


class DataError(ValueError):
  """Data a run cannot use as it is (missing, malformed, or not matching the config); the
  message names the data and the problem."""


def split_image_size(name: str) -> Tuple[str, Optional[int]]:
  """(dataset name, image size or None): ``"imagenet2012@128"`` -> ``("imagenet2012", 128)``,
  ``"mnist"`` -> ``("mnist", None)``; ValueError for a size that is not a positive int."""
  base, at, size = name.partition("@")
  if not at:
    return name, None
  if not size.isdigit() or int(size) < 1:
    raise ValueError(
      f"dataset {name!r}: the image size after '@' must be a positive int (as in 'NAME@128')"
    )
  return base, int(size)


def default_data_dir():
  """$JEBM_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (expanded, as a str)."""
  path = (
    os.environ.get("JEBM_DATA_DIR") or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  )
  return os.path.expanduser(path)


def builder(name, *, data_dir=None, manual_dir=None):
  """The prepared TFDS builder for `name`; prepares jebm's own datasets on first use.

  Args:
    name: a `JEBM_DATASETS` name (``"digits"``, ``"mnist"``, ``"toy2d/8gaussians"``; the
      ``jebm_`` TFDS names work too) or a TFDS registry name, optionally with config/version
      (``"downsampled_imagenet/32x32"``, ``"cifar10:3.0.2"``); an ``@SIZE`` ending is ignored here.
    data_dir: see the module docstring.
    manual_dir: for ``mnist``: directory of the four IDX files (default $JEBM_MNIST_DIR, then
      ``<data_dir>/downloads/manual``); for ``dsprites/deepmind``: the folder of DeepMind's
      ``.npz`` (default ``<data_dir>/downloads/manual``).

  Returns:
    A prepared `tfds.core.DatasetBuilder` whose data is in a random-access (ArrayRecord) format.

  Raises:
    ValueError: unknown name (lists jebm's names).
    FileNotFoundError: missing MNIST files, or a TFDS dataset that is not prepared (the message
      gives the `tfds build` command).
  """
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  name, _ = split_image_size(name)
  jebm_cls, config = _jebm_builder_cls(name)
  if jebm_cls is not None:
    return _prepare_jebm(jebm_cls, config, data_dir, manual_dir)
  return _prepared_tfds_builder(name, data_dir)


def load(name, split, *, data_dir=None, manual_dir=None):
  """A random-access source over one split; see `builder` for the arguments and errors.

  Args:
    name: dataset name (see `builder`).
    split: ``"train"``, ``"test"``, or any TFDS split expression (``"train[:10%]"``).
    data_dir: see the module docstring.
    manual_dir: for ``mnist`` and ``dsprites/deepmind`` only (see `builder`).

  Returns:
    A sequence (``len``, ``[i]``; ``__getitems__`` unless resized) of records ``{"image": uint8
    [H, W, C] (float32 [2] for toy2d; [SIZE, SIZE, C] for ``NAME@SIZE``), "label": int scalar,
    ...}``.

  Raises:
    ValueError: unknown name or split.
  """
  prepared = builder(name, data_dir=data_dir, manual_dir=manual_dir)
  try:
    source = prepared.as_data_source(split=split)
  except (KeyError, ValueError, AssertionError) as e:
    raise ValueError(
      f"Unknown split {split!r} for dataset {name!r}: available splits are"
      f" {sorted(prepared.info.splits)} (slices like 'train[:10%]' work too)"
    ) from e
  _, size = split_image_size(name)
  if size is None:
    return source
  return grain.MapDataset.source(source).map(functools.partial(resize.resize_record, size=size))


def arrays(name, split, *, data_dir=None, manual_dir=None):
  """A whole split in memory (for small datasets); arguments as in `load`.

  Returns:
    dict of numpy arrays: ``"image"`` [N, H, W, C] uint8 (float32 [N, 2] for toy2d) and, when
    the dataset has labels, ``"label"`` [N] int32.
  """
  return source_to_arrays(load(name, split, data_dir=data_dir, manual_dir=manual_dir))


def source_to_arrays(source, keys=("image", "label")):
  """Reads a random-access source in bulk into stacked numpy arrays.

  Args:
    source: sequence of record dicts (`load`'s result, or any list of dicts).
    keys: record keys to keep (those absent from the records are skipped).

  Returns:
    dict key -> array [N, ...] (integer labels as int32).

  Raises:
    DataError: records whose arrays differ in shape (images of varying size).
  """
  n = len(source)
  if n == 0:
    raise ValueError("Empty source: nothing to read")
  first = source[0]
  dtypes = {k: np.asarray(first[k]).dtype for k in keys if k in first}
  if "label" in dtypes and np.issubdtype(dtypes["label"], np.integer):
    dtypes["label"] = np.dtype(np.int32)
  out = {k: np.empty((n,) + np.shape(first[k]), dtype) for k, dtype in dtypes.items()}
  read = getattr(source, "__getitems__", None) or (lambda ids: [source[i] for i in ids])
  for start in range(0, n, _READ_CHUNK):
    records = read(range(start, min(start + _READ_CHUNK, n)))
    for k, array in out.items():
      array[start : start + len(records)] = stack_records(records, k, array.shape[1:])
  return out


def stack_records(records, key: str, shape=None) -> np.ndarray:
  """``np.stack`` of ``record[key]`` over ``records`` ([N, ...]), all of ``shape`` if given (else
  of the first's); DataError naming the shapes when they differ (images of varying size)."""
  values = [np.asarray(r[key]) for r in records]
  shapes = {v.shape for v in values} | ({tuple(shape)} if shape is not None else set())
  if len(shapes) > 1:
    raise DataError(
      f"the records' {key!r} arrays differ in shape ({sorted(shapes)[:4]}): images of varying"
      " size need one size; name the dataset as 'NAME@SIZE' (e.g. 'imagenet2012@128') to resize"
      " the short side to SIZE and keep the central SIZE x SIZE"
    )
  return np.stack(values)


def _jebm_builder_cls(name):
  """(builder class, config name or None) for jebm's names, else (None, None)."""
  base, _, config = name.removeprefix("jebm_").partition("/")
  if base not in _JEBM_BUILDERS:
    return None, None
  cls = _JEBM_BUILDERS[base]
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if config and config not in configs:
    raise ValueError(f"Unknown dataset {name!r}; jebm's datasets are {JEBM_DATASETS}")
  return cls, (config or None)


def _prepare_jebm(cls, config, data_dir, manual_dir):
  """Builds (once) and returns a jebm builder; safe against a concurrent prepare."""
  prepared = cls(data_dir=data_dir, config=config)
  if prepared.is_prepared():
    return prepared
  if cls is JebmMnist:
    manual_dir = _mnist_dir(manual_dir, data_dir)
    find_mnist_files(manual_dir)  # Fail fast, with the instructions, before TFDS starts.
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
  try:
    prepared.download_and_prepare(download_config=download_config)
  except OSError:
    # Another process may have won the race to rename the finished directory.
    again = cls(data_dir=data_dir, config=config)
    if not again.is_prepared():
      raise
    return again
  return prepared


def _mnist_dir(manual_dir, data_dir):
  """manual_dir, else $JEBM_MNIST_DIR, else <data_dir>/downloads/manual if it exists, else None."""
  default = Path(data_dir) / "downloads" / "manual"
  return manual_dir or os.environ.get(MNIST_ENV_VAR) or (default if default.is_dir() else None)


def _prepared_tfds_builder(name, data_dir):
  """A TFDS registry builder that is already prepared in a random-access format."""
  base = name.partition("/")[0].partition(":")[0]
  if base not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(
      f"Unknown dataset {name!r}: not one of jebm's datasets {JEBM_DATASETS}"
      " and not in the TFDS registry (tfds.list_builders())"
    )
  prepared = tfds.builder(name, data_dir=data_dir)
  command = f"tfds build {name} --file_format=array_record --data_dir={data_dir}"
  how = (
    f"Prepare it once with:\n  {command}\n(that one-off step needs TensorFlow, e.g. in a"
    " separate environment with `pip install tensorflow tensorflow-datasets`; reading it"
    " afterwards does not). jebm never downloads TFDS datasets itself."
  )
  if not prepared.is_prepared():
    raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {data_dir}. {how}")
  formats = prepared.info.available_file_formats()
  if not formats & set(tfds.core.FileFormat.with_random_access()):
    raise FileNotFoundError(
      f"TFDS dataset {name!r} is prepared in {data_dir} only as"
      f" {sorted(f.value for f in formats)}, which has no random access. {how}"
    )
  return prepared
