"""TFDS builder ``jebm_mnist``: MNIST from the four standard IDX files in a manual directory.

Nothing is downloaded. The directory is TFDS's manual dir (``download_config.manual_dir``, which
`jebm.data.load(..., manual_dir=DIR)` passes, or TFDS's default ``<data_dir>/downloads/manual``)
when it holds the files, else the environment variable ``JEBM_MNIST_DIR``. Records keep the IDX
order (record i = image i), image uint8 [28, 28, 1], label 0-9; 60000 train, 10000 test.
"""

import os
from pathlib import Path

import tensorflow_datasets as tfds

from jebm.data.builders.base import JebmBuilder
from jebm.data.idx import read_idx

MNIST_ENV_VAR = "JEBM_MNIST_DIR"
# stem -> IDX kind; each may be spelled 'stem-idx3-ubyte' or 'stem.idx3-ubyte', optionally '.gz'.
MNIST_FILES = {
  "train-images": "idx3",
  "train-labels": "idx1",
  "t10k-images": "idx3",
  "t10k-labels": "idx1",
}

INSTRUCTIONS = f"""\
Put the four standard MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; gzipped or not; '.idx3-ubyte' spellings work too)
in one directory and pass it as manual_dir=DIR to jebm.data.load / download_config.manual_dir, or
set the environment variable {MNIST_ENV_VAR}=DIR. jebm never downloads them; the usual MNIST
mirrors serve them (e.g. https://ossci-datasets.s3.amazonaws.com/mnist/)."""


def _candidates(stem, kind):
  names = (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte")
  return [n + ext for n in names for ext in ("", ".gz")]


def find_mnist_files(directory):
  """Locates the four MNIST IDX files in `directory`.

  Args:
    directory: a path, or None (treated as "no directory given").

  Returns:
    dict stem -> Path for the stems of `MNIST_FILES` ('train-images', ..., 't10k-labels').

  Raises:
    FileNotFoundError: naming the missing files, the directory, the `manual_dir` argument and
      the JEBM_MNIST_DIR environment variable.
  """
  if directory is None:
    raise FileNotFoundError(f"MNIST IDX files not found: no directory given.\n{INSTRUCTIONS}")
  directory = Path(directory).expanduser()
  found, missing = {}, []
  for stem, kind in MNIST_FILES.items():
    hits = [directory / n for n in _candidates(stem, kind) if (directory / n).is_file()]
    if hits:
      found[stem] = hits[0]
    else:
      missing.append(f"{stem}-{kind}-ubyte[.gz]")
  if missing:
    raise FileNotFoundError(
      f"MNIST IDX files missing in {directory}: {', '.join(missing)}.\n{INSTRUCTIONS}"
    )
  return found


def _manual_dir(dl_manager):
  """TFDS's manual dir (given or ``<data_dir>/downloads/manual``) if it holds the files, else
  $JEBM_MNIST_DIR if set, else the TFDS one (for the error message); None if neither exists."""
  try:
    tfds_dir = dl_manager.manual_dir  # Raises when it does not exist or is empty.
  except AssertionError:
    tfds_dir = None
  env_dir = os.environ.get(MNIST_ENV_VAR)
  if tfds_dir is not None and (not env_dir or _has_all_files(tfds_dir)):
    return tfds_dir
  return env_dir or tfds_dir


def _has_all_files(directory):
  try:
    find_mnist_files(directory)
    return True
  except FileNotFoundError:
    return False


def read_mnist_split(images_path, labels_path):
  """Reads one split's IDX pair.

  Args:
    images_path: IDX3 file of [N, 28, 28] uint8 images.
    labels_path: IDX1 file of [N] uint8 labels in 0..9.

  Returns:
    (images uint8 [N, 28, 28, 1], labels uint8 [N]).

  Raises:
    ValueError: a corrupt file, mismatched counts, wrong image size or labels outside 0..9.
  """
  images = read_idx(images_path, ndim=3)
  labels = read_idx(labels_path, ndim=1)
  if images.shape[1:] != (28, 28):
    raise ValueError(f"{images_path}: images of shape {images.shape[1:]}, expected (28, 28)")
  if len(images) != len(labels):
    raise ValueError(
      f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
    )
  if labels.size and labels.max() > 9:
    raise ValueError(f"{labels_path}: label {labels.max()} outside 0..9 (corrupt file?)")
  return images[..., None], labels


class JebmMnist(JebmBuilder):
  """MNIST from local IDX files (ArrayRecord by default)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: IDX files from a manual dir, IDX order kept."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _info(self):
    return self._labelled_image_info(
      (28, 28, 1),
      10,
      homepage="http://yann.lecun.com/exdb/mnist/",
      citation="LeCun, Cortes & Burges, The MNIST database of handwritten digits, 1998.",
    )

  def _split_generators(self, dl_manager):
    files = find_mnist_files(_manual_dir(dl_manager))
    return {
      "train": self._generate_examples(files["train-images"], files["train-labels"]),
      "test": self._generate_examples(files["t10k-images"], files["t10k-labels"]),
    }

  def _generate_examples(self, images_path, labels_path):
    images, labels = read_mnist_split(images_path, labels_path)
    for i in range(len(images)):
      yield i, {"image": images[i], "label": int(labels[i])}
