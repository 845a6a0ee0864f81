"""Images of varying size brought to one square size, as the paper's ImageNet128 pipeline does:
resize (aspect kept) so that the short side is SIZE, then crop the central SIZE x SIZE.

A dataset read as ``"NAME@SIZE"`` (``jebm.data.load("imagenet2012@128", "train")``) passes every
record through `resize_record`, wherever it is read (training, evaluation, the judge).
"""

import numpy as np
from PIL import Image


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central ``size`` x ``size`` crop of ``image`` resized so that its short side is ``size``.

  Resampling is PIL's bilinear, which averages over the shrunk pixels (antialiased); the paper's
  TensorFlow ``resize_bilinear`` did not, so downscaled pixels differ slightly from its pipeline.

  Args:
    image: uint8 [H, W, C] (any H, W >= 1 and C).
    size: the output side, > 0.

  Returns:
    uint8 [size, size, C].
  """
  h, w, _ = image.shape
  scale = size / min(h, w)
  new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  channels = [
    np.asarray(Image.fromarray(image[..., c]).resize((new_w, new_h), Image.BILINEAR))
    for c in range(image.shape[-1])
  ]
  return np.stack(channels, axis=-1)[top : top + size, left : left + size]


def resize_record(record: dict, size: int) -> dict:
  """``record`` with its "image" (uint8 [H, W, C]) replaced by its ``resize_and_center_crop``."""
  return dict(record, image=resize_and_center_crop(np.asarray(record["image"]), size))
