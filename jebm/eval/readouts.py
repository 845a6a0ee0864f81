"""dSprites read-outs: a small conv network, trained by jebm on drawn dSprites images, that reads
every factor back from an image, to score generated images against the conditions they were asked
for (``experiments/compose.py``, ``experiments/zero_shot.py``).

One trunk (three 3x3 stride-2 convs, a dense layer) with four heads:
  position  (x, y) in [0, 1], regressed;          error: Euclidean, in pixels of the 64 x 64 frame
  scale     regressed;                            error: absolute
  shape     3 logits, classified;                 accuracy
  rotation  (cos k theta, sin k theta) for the shape's symmetry order k (square 4, ellipse 2,
            heart 1), regressed;                  error: degrees, modulo the shape's symmetry
The rotation error is measured with the true shape's k, so it counts what is visible.

    params = readouts.train(*readouts.training_set(20000, size=32, seed=0))
    scores = readouts.summarize(readouts.errors(params, images, latents_values))
"""

import os
from typing import Dict, Tuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jebm import baselines, files
from jebm.data import dsprites
from jebm.data.resize import resize_and_center_crop

SYMMETRY = np.array([4, 2, 1])  # rotation symmetry order of square, ellipse, heart
POSITION_PIXELS = dsprites.HIGH - dsprites.LOW  # pixels of the 64 x 64 frame from x = 0 to x = 1
TRAINING = baselines.BaselineConfig(num_steps=1500, batch_size=128, learning_rate=2e-3)
NUM_TRAINING_IMAGES = 20000


class ReadoutNet(nn.Module):
  """images [B, S, S, 1] in [0, 1] -> [B, 12]: position 2, scale 1, shape logits 3, rotation 6
  ((cos k theta, sin k theta) for k = 4, 2, 1)."""

  @nn.compact
  def __call__(self, x):
    for width in (32, 64, 64):
      x = nn.swish(nn.Conv(width, (3, 3), strides=2)(x))
    x = nn.swish(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(12)(x)


def drawn_images(index: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Grid images ``index`` [N] as the models see them (``dsprites@size``): (images float32 [N,
  size, size, 1] in [0, 1], latents_values float32 [N, 5])."""
  drawn = dsprites.images(np.asarray(index))
  images = drawn["image"]
  if size != dsprites.SIZE:
    images = np.stack([resize_and_center_crop(im, size) for im in images])
  return images.astype(np.float32) / 255.0, drawn["latents_values"]


def training_set(num: int, size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """``num`` grid images drawn uniformly (with replacement) by ``seed``, at ``size``: as
  ``drawn_images``."""
  index = np.random.default_rng(seed).integers(0, dsprites.NUM_IMAGES, num)
  return drawn_images(index, size)


def _targets(latents_values: jax.Array):
  """(position [N, 2], scale [N], shape ids [N], rotation targets [N, 2] for each shape's k)."""
  shape = jnp.rint(latents_values[:, 0]).astype(jnp.int32)
  angle = jnp.asarray(SYMMETRY)[shape] * latents_values[:, 2]
  rotation = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
  return latents_values[:, 3:5], latents_values[:, 1], shape, rotation


def _heads(outputs: jax.Array, shape: jax.Array):
  """(position [N, 2], scale [N], shape logits [N, 3], rotation [N, 2] for shapes ``shape``)."""
  rotation = outputs[:, 6:12].reshape(-1, 3, 2)
  rotation = jnp.take_along_axis(rotation, shape[:, None, None], axis=1)[:, 0]
  return outputs[:, 0:2], outputs[:, 2], outputs[:, 3:6], rotation


def train(
  images: np.ndarray,
  latents_values: np.ndarray,
  config: baselines.BaselineConfig = TRAINING,
  seed: int = 0,
):
  """Trains a ``ReadoutNet`` on images [N, S, S, 1] with their latents_values [N, 5] (squared
  errors of position, scale and rotation, cross-entropy of shape); returns its params."""
  images, latents_values = np.asarray(images, np.float32), np.asarray(latents_values, np.float32)
  image_shape = images.shape[1:]
  packed = np.concatenate([images.reshape(len(images), -1), latents_values], axis=1)
  net = ReadoutNet()
  init_key, fit_key = jax.random.split(jax.random.key(seed))
  params = _init(init_key, image_shape[0])

  def loss_fn(params, batch, key):
    del key
    x, latents = batch[:, :-5].reshape(-1, *image_shape), batch[:, -5:]
    position, scale, shape, rotation = _targets(latents)
    p_position, p_scale, logits, p_rotation = _heads(net.apply({"params": params}, x), shape)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), shape[:, None], axis=1)[:, 0]
    return jnp.mean(
      jnp.sum((p_position - position) ** 2, -1)
      + 4.0 * (p_scale - scale) ** 2
      + ce
      + jnp.sum((p_rotation - rotation) ** 2, -1)
    )

  params, _ = baselines.fit(loss_fn, params, packed, config, fit_key)
  return params


def _init(key, size: int):
  return ReadoutNet().init(key, jnp.zeros((1, size, size, 1)))["params"]


def load_or_train(path: str, size: int, seed: int = 0):
  """Read-out params for images of ``size`` x ``size``: read from ``path`` (flax msgpack) when it
  exists, else trained on ``NUM_TRAINING_IMAGES`` drawn images (13 minutes on 2 CPU cores) and
  written there."""
  template = _init(jax.random.key(0), size)
  if os.path.exists(path):
    with open(path, "rb") as f:
      return flax.serialization.from_bytes(template, f.read())
  params = train(*training_set(NUM_TRAINING_IMAGES, size, seed), seed=seed)
  data = flax.serialization.to_bytes(params)
  files.write_atomically(path, lambda tmp: open(tmp, "wb").write(data))
  return params


def predicted_shapes(params, images) -> np.ndarray:
  """The shape ids [N] the read-out sees in ``images`` [N, S, S, 1]."""
  return np.argmax(_outputs(params, images)[:, 3:6], axis=-1)


def _outputs(params, images, batch_size: int = 500) -> np.ndarray:
  """The read-out's raw outputs [N, 12] of images [N, S, S, 1], in batches."""
  apply = jax.jit(lambda x: ReadoutNet().apply({"params": params}, x))
  return np.concatenate(
    [
      np.asarray(apply(jnp.asarray(images[i : i + batch_size], jnp.float32)))
      for i in range(0, len(images), batch_size)
    ]
  )


def errors(params, images, latents_values) -> Dict[str, np.ndarray]:
  """Per-image read-out errors of ``images`` [N, S, S, 1] in [0, 1] against the factors they
  should show, latents_values [N, 5] (shape, scale, orientation, x, y).

  Returns:
    {"position_px": [N] Euclidean error in pixels of the 64 x 64 frame, "scale": [N] absolute
    error, "shape_correct": [N] 0/1, "rotation_deg": [N] error in degrees modulo the true shape's
    symmetry}.
  """
  outputs = _outputs(params, images)
  position, scale, shape, rotation = _targets(jnp.asarray(latents_values, jnp.float32))
  p_position, p_scale, logits, p_rotation = _heads(jnp.asarray(outputs), shape)
  k = jnp.asarray(SYMMETRY)[shape]
  turn = jnp.arctan2(p_rotation[:, 1], p_rotation[:, 0]) - jnp.arctan2(
    rotation[:, 1], rotation[:, 0]
  )
  turn = jnp.abs(jnp.angle(jnp.exp(1j * turn)))  # in [0, pi]: the error of k theta
  out = {
    "position_px": jnp.linalg.norm(p_position - position, axis=-1) * POSITION_PIXELS,
    "scale": jnp.abs(p_scale - scale),
    "shape_correct": (jnp.argmax(logits, -1) == shape).astype(jnp.float32),
    "rotation_deg": jnp.degrees(turn) / k,
  }
  return {name: np.asarray(v) for name, v in out.items()}


def summarize(per_image: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
  """``{name: {"mean": ..., "sem": ...}}`` (standard error of the mean) of ``errors``' arrays."""
  return {
    name: {
      "mean": float(np.mean(v)),
      "sem": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0,
    }
    for name, v in per_image.items()
  }
