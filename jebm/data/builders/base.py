"""Common base of jebm's TFDS builders: ArrayRecord by default, no `importlib_resources` needed."""

import inspect

import numpy as np

from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils


class JebmBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder that writes ArrayRecord files unless told otherwise."""

  def __init__(self, *, file_format="array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls):
    """The builder's source file.

    TFDS 4.9.10's own `code_path` lazily imports the `importlib_resources` backport for any
    builder defined in a package, though TFDS only requires that backport on Python < 3.9;
    this equivalent avoids it.
    """
    return epath.Path(inspect.getfile(cls))

  def _labelled_image_info(self, shape, num_classes, *, homepage, citation):
    """DatasetInfo for uint8 images of ``shape`` with class labels, in record order."""
    return tfds.core.DatasetInfo(
      builder=self,
      description=inspect.getmodule(type(self)).__doc__,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(
            shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
          ),
          "label": tfds.features.ClassLabel(num_classes=num_classes),
        }
      ),
      supervised_keys=("image", "label"),
      disable_shuffling=True,
      homepage=homepage,
      citation=citation,
    )
