"""TFDS builder ``jebm_digits``: scikit-learn's 8x8 handwritten digits (bundled with sklearn).

1797 images, 8x8x1 uint8 (sklearn's 0..16 grey levels scaled by round(v * 255 / 16)), labels 0-9.
Fixed split, a pure function of the labels and seed 0 (see `digits_split`): a stratified 300-image
test set (29-31 per class) and a 1497-image train set. Records keep the original sklearn order
within each split (index i of the split = i-th smallest original index).
"""

import numpy as np
import tensorflow_datasets as tfds

from jebm.data.builders.base import JebmBuilder

NUM_TEST = 300
SPLIT_SEED = 0


def digits_split(labels, num_test=NUM_TEST, seed=SPLIT_SEED):
  """Deterministic stratified split (numpy only, independent of scikit-learn's version).

  Each class c gets round-to-largest-remainder(num_test * n_c / N) test examples, taken from a
  permutation of that class drawn from ``np.random.default_rng([seed, c])``.

  Args:
    labels: int [N] class labels.
    num_test: size of the test split.
    seed: non-negative int.

  Returns:
    (train_idx, test_idx): sorted int64 index arrays, disjoint, covering range(N).
  """
  labels = np.asarray(labels)
  classes, counts = np.unique(labels, return_counts=True)
  quota = num_test * counts / counts.sum()
  per_class = np.floor(quota).astype(int)
  short = num_test - per_class.sum()
  per_class[np.argsort(-(quota - per_class), kind="stable")[:short]] += 1
  test = [
    np.random.default_rng([seed, int(c)]).permutation(np.flatnonzero(labels == c))[:k]
    for c, k in zip(classes, per_class)
  ]
  test_idx = np.sort(np.concatenate(test))
  train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
  return train_idx, test_idx


class JebmDigits(JebmBuilder):
  """scikit-learn's 8x8 digits as a TFDS dataset (ArrayRecord by default)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: stratified 1497/300 split, seed 0."}

  def _info(self):
    return self._labelled_image_info(
      (8, 8, 1),
      10,
      homepage="https://archive.ics.uci.edu/dataset/80",
      citation="Alpaydin & Kaynak, Optical Recognition of Handwritten Digits, UCI, 1998.",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Bundled with scikit-learn: nothing to download.
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    train_idx, test_idx = digits_split(digits.target)
    return {
      "train": self._generate_examples(images, digits.target, train_idx),
      "test": self._generate_examples(images, digits.target, test_idx),
    }

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}
