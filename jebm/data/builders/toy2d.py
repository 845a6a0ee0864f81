"""TFDS builder ``jebm_toy2d``: 2-D toy densities, one builder config per density.

Configs: 8gaussians, rings, checkerboard, two_moons (see `jebm.data.toy2d` for the definitions).
Records ``{"image": float32 [2], "label": int32}``; train = ``sample(name, 50000, seed=0)``,
test = ``sample(name, 5000, seed=1)``, in sampling order.
"""

import numpy as np
import tensorflow_datasets as tfds

from jebm.data import toy2d
from jebm.data.builders.base import JebmBuilder

SPLITS = {"train": (50_000, 0), "test": (5_000, 1)}  # split -> (size, seed)


class JebmToy2d(JebmBuilder):
  """2-D toy densities as a TFDS dataset (ArrayRecord by default)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train 50k (seed 0), test 5k (seed 1)."}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name=name, description=f"toy2d density {name}") for name in toy2d.NAMES
  ]

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__ + "\n" + toy2d.__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(2,), dtype=np.float32),
          "label": tfds.features.Scalar(dtype=np.int32),
        }
      ),
      supervised_keys=("image", "label"),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Procedurally generated.
    return {split: self._generate_examples(size, seed) for split, (size, seed) in SPLITS.items()}

  def _generate_examples(self, size, seed):
    points, labels = toy2d.sample(self.builder_config.name, size, seed)
    for i in range(size):
      yield i, {"image": points[i], "label": labels[i]}
