"""TFDS builder ``jebm_dsprites``: dSprites, drawn procedurally or read from DeepMind's file.

Configs:
  procedural (default): the 737,280 images of `jebm.data.dsprites`, drawn from their factors
    (prepared in about 2 minutes on one core, 0.6 GB peak memory; PNG-encoded, 228 MB).
  deepmind: DeepMind's ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` from the manual dir
    (``jebm.data.load(..., manual_dir=DIR)``), nothing downloaded.
Records ``{"image": uint8 [64, 64, 1] (0 or 255), "label": shape index, "latents_classes": int32
[5], "latents_values": float32 [5]}`` (factors: shape, scale, orientation, x, y), in grid order;
one split, "train".
"""

import os

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from jebm.data import dsprites
from jebm.data.builders.base import JebmBuilder

DEEPMIND_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
_CHUNK = 4096


class JebmDsprites(JebmBuilder):
  """dSprites as a TFDS dataset (ArrayRecord by default)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: the full factor grid, procedural or DeepMind's."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""For dsprites/deepmind only: put {DEEPMIND_FILE}
  (https://github.com/google-deepmind/dsprites-dataset) in the manual dir."""
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name="procedural", description="drawn by jebm.data.dsprites"),
    tfds.core.BuilderConfig(name="deepmind", description=f"{DEEPMIND_FILE} from the manual dir"),
  ]

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__ + "\n" + dsprites.__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(64, 64, 1), encoding_format="png"),
          "label": tfds.features.ClassLabel(names=dsprites.SHAPES),
          "latents_classes": tfds.features.Tensor(shape=(5,), dtype=np.int32),
          "latents_values": tfds.features.Tensor(shape=(5,), dtype=np.float32),
        }
      ),
      supervised_keys=("image", "label"),
      disable_shuffling=True,
      homepage="https://github.com/google-deepmind/dsprites-dataset",
    )

  def _split_generators(self, dl_manager):
    if self.builder_config.name == "procedural":
      return {"train": self._generate_examples(self._drawn())}
    path = os.path.join(dl_manager.manual_dir, DEEPMIND_FILE)
    if not os.path.exists(path):
      raise FileNotFoundError(
        f"dsprites/deepmind reads {DEEPMIND_FILE} from the manual dir ({dl_manager.manual_dir}):"
        " download it from https://github.com/google-deepmind/dsprites-dataset and pass its"
        " folder as manual_dir (or use dsprites/procedural, which needs no file)"
      )
    return {"train": self._generate_examples(self._read(path))}

  def _drawn(self):
    for start in range(0, dsprites.NUM_IMAGES, _CHUNK):
      yield dsprites.images(np.arange(start, min(start + _CHUNK, dsprites.NUM_IMAGES)))

  def _read(self, path):
    with np.load(path, allow_pickle=False) as npz:
      imgs, classes = npz["imgs"], npz["latents_classes"][:, 1:].astype(np.int32)
    for start in range(0, len(imgs), _CHUNK):
      block = classes[start : start + _CHUNK]
      yield {
        "image": imgs[start : start + _CHUNK, :, :, None] * np.uint8(255),
        "latents_classes": block,
        "latents_values": dsprites.latent_values(block),
      }

  def _generate_examples(self, chunks):
    i = 0
    for chunk in chunks:
      for image, classes, values in zip(
        chunk["image"], chunk["latents_classes"], chunk["latents_values"]
      ):
        yield (
          i,
          {
            "image": PIL.Image.fromarray(image[..., 0]),
            "label": int(classes[0]),
            "latents_classes": classes,
            "latents_values": values,
          },
        )
        i += 1
