"""Test set-up: two emulated CPU devices, so multi-device code is always exercised; the XLA CPU
options the launchers use."""

import os

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from jebm.data.builders.base import JebmBuilder
from jebm.xla_flags import use_fast_cpu_flags

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
use_fast_cpu_flags()


@pytest.fixture(scope="session")
def compilation_cache_env(tmp_path_factory) -> dict:
  """Environment variables that give the launchers the tests start one persistent JAX compilation
  cache for the session: the many launches of the same tiny programs then compile each once."""
  return dict(
    JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
  )


VARIABLE_SIZES = ((20, 40), (48, 24), (16, 16), (17, 90), (33, 21), (64, 50))


class VariableSizeImages(JebmBuilder):
  """Stands for ImageNet as `tfds build` prepares it: encoded images of varying size."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
          "label": tfds.features.ClassLabel(num_classes=2),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(0)
    for i, shape in enumerate(VARIABLE_SIZES):
      yield i, {"image": PIL.Image.fromarray(smooth_image(rng, shape)), "label": i % 2}


def smooth_image(rng, shape):
  """A smooth random uint8 image [H, W, 3] (its resizes are well defined)."""
  h, w = shape
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  a, b = rng.uniform(0, 255, (2, 3))
  return (a * yy[..., None] + b * xx[..., None] * (1 - yy[..., None])).astype(np.uint8)


@pytest.fixture
def variable_size_images(tmp_path) -> str:
  """A data dir holding ``variable_size_images``: six PNG images of `VARIABLE_SIZES`, labels 0/1."""
  VariableSizeImages(data_dir=tmp_path).download_and_prepare(
    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  return str(tmp_path)
