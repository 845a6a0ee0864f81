"""The judge: a small convnet classifier trained on a dataset's real images, to score samples.

FID, KID and IS are defined on Inception-v3 features, whose weights jebm never downloads. The judge
stands in for it: trained on the real training split with a fixed seed, it gives class
predictions (is a sample conditioned on "7" recognisably a 7?) and penultimate-layer features
(FID/KID between samples and real test images). Judge-based numbers compare models with each
other; they are not comparable with published Inception FIDs. For those, plug in your own feature
network (``jebm.eval.features``).

    judge, test_accuracy = load_or_train_judge("mnist")   # jebm.eval.judge_cache
    logits = judge_logits(judge, images)                  # images float [N, H, W, C] in [0, 1]

This module is the network and its use; ``judge_training`` trains one, ``judge_cache`` keeps
trained judges in the data dir.

Architecture (``JudgeNet``): per stage a 3x3 conv ('SAME', the stage's stride) and ReLU; flatten;
Dense(hidden) and ReLU (the features); Dense(num_classes) (the logits). No batch norm, no dropout:
a pure function of the image. Defaults by image size (``default_judge_config``):
  - up to 16x16 (8x8 digits): widths (32, 64), strides (1, 2), 800 steps of batch 64;
  - larger grey images (28x28 MNIST): widths (32, 64), strides (2, 2), 1500 steps of batch 128;
  - colour images: stride-2 stages of widths 64, 128, ... until the map is at most 8x8, 3000 steps.
  Adam with a cosine-decayed learning rate 2e-3, softmax cross-entropy, no augmentation unless
  ``augment_shift`` > 0 (random translations by up to that many pixels, zero-filled).
"""

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jebm.eval.batching import IMAGES_PER_CALL, map_batches


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  """Judge architecture and training settings (hashable: static under jit).

  Attributes:
    num_classes: K, the number of classes.
    image_shape: (H, W, C) of the images it judges.
    features: conv widths, one per stage.
    strides: conv strides, one per stage.
    hidden: D, the width of the penultimate (feature) layer.
    num_steps: training steps.
    batch_size: training batch size.
    learning_rate: peak Adam learning rate (cosine-decayed to 0 over ``num_steps``).
    augment_shift: random translation of training images by up to this many pixels (0: none).
  """

  num_classes: int
  image_shape: tuple
  features: tuple
  strides: tuple
  hidden: int = 128
  num_steps: int = 1500
  batch_size: int = 128
  learning_rate: float = 2e-3
  augment_shift: int = 0

  def __post_init__(self):
    for name in ("image_shape", "features", "strides"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    if len(self.image_shape) != 3 or min(self.image_shape) < 1:
      raise ValueError(f"JudgeConfig.image_shape must be (H, W, C), got {self.image_shape}")
    if not self.features or len(self.features) != len(self.strides):
      raise ValueError(
        f"JudgeConfig needs one stride per conv stage, got features={self.features}"
        f" and strides={self.strides}"
      )
    positive = dict(
      num_classes=self.num_classes,
      hidden=self.hidden,
      num_steps=self.num_steps,
      batch_size=self.batch_size,
      learning_rate=self.learning_rate,
    )
    bad = {k: v for k, v in positive.items() if not v > 0}
    if bad or min(self.features + self.strides) < 1 or self.augment_shift < 0:
      raise ValueError(
        f"JudgeConfig: sizes, steps and rates must be positive (augment_shift ≥ 0);"
        f" got {bad or dataclasses.asdict(self)}"
      )


def default_judge_config(image_shape: Sequence[int], num_classes: int) -> JudgeConfig:
  """The default judge for images of shape (H, W, C) (see the module docstring)."""
  h, w, c = (int(v) for v in image_shape)
  if max(h, w) <= 16:
    return JudgeConfig(
      num_classes, (h, w, c), features=(32, 64), strides=(1, 2), num_steps=800, batch_size=64
    )
  stages = max(1, math.ceil(math.log2(max(h, w) / 8)))
  base, steps = (32, 1500) if c == 1 else (64, 3000)
  features = tuple(base * 2**i for i in range(stages))
  return JudgeConfig(
    num_classes,
    (h, w, c),
    features=features,
    strides=(2,) * stages,
    hidden=128 if c == 1 else 256,
    num_steps=steps,
    batch_size=128,
  )


def check_judge_settings(settings):
  """The non-None settings, after checking that each names a trainable JudgeConfig field."""
  known = {f.name for f in dataclasses.fields(JudgeConfig)} - {"num_classes", "image_shape"}
  unknown = sorted(set(settings) - known)
  if unknown:
    raise ValueError(f"Unknown judge settings {unknown}; known: {sorted(known)}")
  return {k: v for k, v in settings.items() if v is not None}


def judge_config(image_shape: Sequence[int], num_classes: int, **overrides: Any) -> JudgeConfig:
  """``default_judge_config`` with the given fields replaced (None values are ignored)."""
  return dataclasses.replace(
    default_judge_config(image_shape, num_classes), **check_judge_settings(overrides)
  )


class JudgeNet(nn.Module):
  """The judge's network: images [B, H, W, C] in [0, 1] -> (logits [B, K], features [B, D])."""

  features: tuple
  strides: tuple
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x):
    h = x.astype(jnp.float32) - 0.5
    for i, (width, stride) in enumerate(zip(self.features, self.strides)):
      h = nn.relu(nn.Conv(width, (3, 3), strides=stride, name=f"conv_{i}")(h))
    h = h.reshape(h.shape[0], -1)
    feats = nn.relu(nn.Dense(self.hidden, name="hidden")(h))
    return nn.Dense(self.num_classes, name="logits")(feats), feats


@flax.struct.dataclass
class Judge:
  """A trained judge: ``params`` (a pytree of arrays) and its static ``config``."""

  params: Any
  config: JudgeConfig = flax.struct.field(pytree_node=False)


def judge_net(config: JudgeConfig) -> JudgeNet:
  return JudgeNet(config.features, config.strides, config.hidden, config.num_classes)


def init_judge(config: JudgeConfig, rng_key: jax.Array) -> Judge:
  """A judge with freshly initialised parameters."""
  dummy = jnp.zeros((1,) + config.image_shape, jnp.float32)
  return Judge(judge_net(config).init(rng_key, dummy)["params"], config)


def as_judge_images(images, config: JudgeConfig):
  """float32 images in [0, 1]; integer (uint8) images are divided by 255. Checks the shape."""
  images = jnp.asarray(images)
  if jnp.issubdtype(images.dtype, jnp.integer):
    images = images.astype(jnp.float32) / 255.0
  if images.ndim != 4 or images.shape[1:] != config.image_shape:
    raise ValueError(
      f"The judge takes images [N, {', '.join(map(str, config.image_shape))}], got"
      f" shape {images.shape}"
    )
  return images.astype(jnp.float32)


def _apply_batched(judge: Judge, images: jax.Array, batch_size: int):
  net = judge_net(judge.config)
  return map_batches(
    lambda x: net.apply({"params": judge.params}, x), images, batch_size=batch_size
  )


@functools.cache
def _jitted_apply():
  return jax.jit(_apply_batched, static_argnames="batch_size")


def judge_logits(judge: Judge, images, *, batch_size: int = IMAGES_PER_CALL) -> jax.Array:
  """Class logits of the judge.

  Args:
    judge: from ``train_judge`` / ``load_or_train_judge``.
    images: [N, H, W, C] float in [0, 1] (uint8 is divided by 255), H, W, C as the judge's.
    batch_size: images per forward pass (bounds memory for large N).

  Returns:
    float32 [N, K] logits.
  """
  return _jitted_apply()(judge, as_judge_images(images, judge.config), batch_size=batch_size)[0]


def judge_features(judge: Judge, images, *, batch_size: int = IMAGES_PER_CALL) -> jax.Array:
  """Penultimate-layer features of the judge (for FID/KID); arguments as in `judge_logits`.

  Returns:
    float32 [N, D] non-negative features, D = ``judge.config.hidden``.
  """
  return _jitted_apply()(judge, as_judge_images(images, judge.config), batch_size=batch_size)[1]


def judge_accuracy(judge: Judge, images, labels, *, batch_size: int = IMAGES_PER_CALL) -> float:
  """Fraction of images [N, H, W, C] whose argmax logit equals their label [N]."""
  predicted = np.asarray(jnp.argmax(judge_logits(judge, images, batch_size=batch_size), -1))
  return float(np.mean(predicted == np.asarray(labels).reshape(-1)))
