"""IGEBM residual energy networks (Du & Mordatch 2019; openai/ebm_code_release, models.py).

A block (the reference code's ``smart_res_block``) maps h [B, H, W, C_in] to
[B, H', W', C_out]:

    r = conv3x3(bias_1(h))                 bias_1: conditional per-channel input bias
    r = conv3x3'(bias_2(act(r)))           conv3x3': near-zero init, spectral norm clipped
    r = gain(r)                            gain: conditional per-channel output gain
    s = h if C_in == C_out else conv1x1(h)
    out = act(avg_pool_2x2(r + s)) if downsample else act(r + s)

The network is: 3x3 conv stem + activation, the blocks, head activation, spatial SUM over
H and W, and an un-normalised Dense to one output. Spectral normalisation (on by default, as
in the paper) covers the stem, every conv of every block and the skip convs; it does not
cover the gains, biases or the final Dense (the reference code's ``fc5`` has spec_norm=False).

Differences from the reference code, all deliberate: the skip conv is 1x1 (the reference
uses 3x3); it is used exactly when the width changes (the reference's ``adaptive`` flag
agrees with that except for ResNet32Wider's first block, which it has even at equal width);
the stem conv has a bias; no attention block and no dropout. The second conv of each block
is initialised with N(0, 1e-10) and divided by max(sigma, 1), as the reference's "zero" /
"lower_bound" weights, so each block starts as (almost) the identity on its skip path.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jebm.models.conditioning import CondBias, CondGain, check_rank, condition_vector
from jebm.models.spectral import SNConv, SNDense, get_activation

Dtype = Any


class ResBlock(nn.Module):
  """One IGEBM residual block: h [B, H, W, C_in] -> [B, H/2 or H, W/2 or W, features].

  See the module docstring for the layout. ``cond`` [B, K] or None drives the conditional
  input biases and the output gain.
  """

  features: int
  downsample: bool
  activation: str = "leaky_relu"
  spectral_norm: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, h: jax.Array, cond: jax.Array | None, *, update_stats: bool = False
  ) -> jax.Array:
    """Apply the block to h [B, H, W, C_in]; returns the activated output in ``dtype``."""
    act = get_activation(self.activation)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    sn = dict(spectral_norm=self.spectral_norm, use_bias=False, **kw)
    r = CondBias(name="bias_1", **kw)(h, cond)
    r = SNConv(self.features, name="conv_1", **sn)(r, update_stats=update_stats)
    r = CondBias(name="bias_2", **kw)(act(r), cond)
    r = SNConv(
      self.features,
      name="conv_2",
      spectral_clip=True,
      kernel_init=nn.initializers.normal(1e-10),
      **sn,
    )(r, update_stats=update_stats)
    r = CondGain(name="gain", **kw)(r, cond)
    skip = h.astype(self.dtype)
    if h.shape[-1] != self.features:
      skip = SNConv(self.features, kernel_size=1, name="skip", **sn)(h, update_stats=update_stats)
    out = r + skip
    if self.downsample:
      out = nn.avg_pool(out, (2, 2), strides=(2, 2), padding="VALID")
    return act(out)


class ResNetEnergy(nn.Module):
  """IGEBM ResNet energy of images x [B, H, W, C] in [0, 1]; returns energies [B] float32.

  Sign convention: p(x) ∝ exp(-E(x)), low energy = likely. Examples never interact.
  H and W must be at least 2**(number of downsampling blocks). Use the presets
  (``resnet32``, ``resnet32_large``, ``resnet32_wider``, ``resnet128``) for the paper's nets.

  Attributes:
    blocks: one (features, downsample) pair per residual block, in order.
    stem_features: width of the initial 3x3 conv.
    num_classes: None (unconditional) or K: y is int ids [B] or float vectors [B, K].
    activation: block / stem activation, "leaky_relu" (slope 0.2) or "swish".
    head_activation: activation before the spatial sum (the reference uses relu, leaky_relu
      for conditional ResNet32Large, swish with --swish_act).
    spectral_norm: spectrally normalise all convs (state in collection 'spectral').
    dtype: computation dtype; params are ``param_dtype``; the head and energies are float32.
  """

  blocks: Sequence[tuple[int, bool]] = (
    (128, True),
    (128, False),
    (256, True),
    (256, False),
    (256, True),
    (256, False),
  )
  stem_features: int = 128
  num_classes: int | None = None
  activation: str = "leaky_relu"
  head_activation: str = "relu"
  spectral_norm: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, y: jax.Array | None = None, *, update_stats: bool = False
  ) -> jax.Array:
    """Energies [B] float32 of x [B, H, W, C] (condition y: None, int [B] or float [B, K]).

    ``update_stats=True`` advances the spectral-norm power iteration (pass
    ``mutable=['spectral']``); False is pure.
    """
    check_rank(x, 4, "[B, H, W, C]", "ResNetEnergy")
    min_size = 2 ** sum(down for _, down in self.blocks)
    if min(x.shape[1:3]) < min_size:
      raise ValueError(
        f"ResNetEnergy with {len(self.blocks)} blocks needs H, W >= {min_size}, got shape {tuple(x.shape)}"
      )
    cond = condition_vector(y, self.num_classes, x.shape[0], "ResNetEnergy")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = SNConv(self.stem_features, name="stem", spectral_norm=self.spectral_norm, **kw)(
      x, update_stats=update_stats
    )
    h = get_activation(self.activation)(h)
    for i, (features, downsample) in enumerate(self.blocks):
      h = ResBlock(
        features,
        downsample,
        activation=self.activation,
        spectral_norm=self.spectral_norm,
        name=f"block_{i}",
        **kw,
      )(h, cond, update_stats=update_stats)
    h = get_activation(self.head_activation)(h.astype(jnp.float32))
    h = jnp.sum(h, axis=(1, 2))
    energy = SNDense(1, name="energy", dtype=jnp.float32, param_dtype=self.param_dtype)(h)
    return energy[:, 0]


def _blocks(widths: Sequence[int], downsample: Sequence[bool]) -> tuple[tuple[int, bool], ...]:
  return tuple(zip(widths, downsample))


def resnet32(num_classes: int | None = None, **overrides: Any) -> ResNetEnergy:
  """The paper's ResNet32 (CIFAR-10 conditional, ``--cclass``) for 32x32x3 inputs.

  Followed: models.py ``ResNet32`` with num_filters F=128 (train.py for cifar10): stem 3x3
  conv to 128, blocks res_optim (128, down), res_1 (128), res_2 (256, down), res_3 (256),
  res_4 (256, down), res_5 (256); leaky-ReLU 0.2, relu head, spatial sum, Dense(256 -> 1);
  spectral norm on. 32 -> 16 -> 8 -> 4. ``overrides`` go to ``ResNetEnergy`` (e.g. dtype).
  """
  config = dict(
    blocks=_blocks((128, 128, 256, 256, 256, 256), (True, False, True, False, True, False)),
    stem_features=128,
    num_classes=num_classes,
    activation="leaky_relu",
    head_activation="relu",
  )
  return ResNetEnergy(**{**config, **overrides})


def resnet32_large(num_classes: int | None = None, **overrides: Any) -> ResNetEnergy:
  """The paper's ResNet32Large (CIFAR-10 unconditional, ``--large_model``) for 32x32x3.

  Followed: models.py ``ResNet32Large`` with F=128: stem 128, blocks res_optim (128, down),
  res_1, res_2 (128), res_3 (256, down), res_4, res_5 (256), res_6 (512, down), res_7,
  res_8 (512); leaky-ReLU 0.2; head relu (leaky-ReLU when conditional, as the reference);
  spatial sum, Dense(512 -> 1). 32 -> 16 -> 8 -> 4.
  """
  config = dict(
    blocks=_blocks(
      (128, 128, 128, 256, 256, 256, 512, 512, 512),
      (True, False, False, True, False, False, True, False, False),
    ),
    stem_features=128,
    num_classes=num_classes,
    activation="leaky_relu",
    head_activation="leaky_relu" if num_classes is not None else "relu",
  )
  return ResNetEnergy(**{**config, **overrides})


def resnet32_wider(
  num_classes: int | None = None, num_filters: int = 192, **overrides: Any
) -> ResNetEnergy:
  """The paper's ResNet32Wider (``--wider_model``) for 32x32x3 inputs.

  Followed: models.py ``ResNet32Wider``: stem 128, then the ResNet32Large layout with widths
  F, F, F, 2F (down), 2F, 2F, 4F (down), 4F, 4F and the first block downsampling; F=192 for
  CIFAR-10 (train.py), pass num_filters=256 for ImageNet 32x32 with num_classes=1000.
  Leaky-ReLU 0.2, relu head, spatial sum, Dense(4F -> 1).
  """
  f = num_filters
  config = dict(
    blocks=_blocks(
      (f, f, f, 2 * f, 2 * f, 2 * f, 4 * f, 4 * f, 4 * f),
      (True, False, False, True, False, False, True, False, False),
    ),
    stem_features=128,
    num_classes=num_classes,
    activation="leaky_relu",
    head_activation="relu",
  )
  return ResNetEnergy(**{**config, **overrides})


def resnet128(num_classes: int | None = None, **overrides: Any) -> ResNetEnergy:
  """The paper's ResNet128 for ImageNet 128x128x3 (conditional with num_classes=1000).

  Followed: models.py ``ResNet128`` with F=64 (imagenet_demo.py) and the README's
  ``--swish_act``: stem 64, blocks res_optim (64, down), res_3 (128, down), res_5 (256, down),
  res_7 (512, down), res_9 (512, down), res_10 (512); swish everywhere (the reference
  leaves res_optim on leaky-ReLU, a quirk not reproduced); spatial sum, Dense(512 -> 1).
  128 -> 64 -> 32 -> 16 -> 8 -> 4.
  """
  config = dict(
    blocks=_blocks((64, 128, 256, 512, 512, 512), (True, True, True, True, True, False)),
    stem_features=64,
    num_classes=num_classes,
    activation="swish",
    head_activation="swish",
  )
  return ResNetEnergy(**{**config, **overrides})
