"""Small convolutional energy for MNIST (28x28x1), 8x8 digits and dSprites (64x64x1)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jebm.models.conditioning import CondBias, CondGain, check_rank, condition_vector
from jebm.models.spectral import SNConv, SNDense, get_activation

Dtype = Any


class ConvEnergy(nn.Module):
  """Energy E(x) or E(x, y) of images x [B, H, W, C] in [0, 1]; returns energies [B] float32.

  Sign convention: p(x) ∝ exp(-E(x)), low energy = likely. Examples never interact.

  Layout (after the IGEBM MnistNet / DspritesNet, with 3x3 instead of 4x4 kernels):
    stem: 3x3 conv to features[0], activation;
    per width f in ``features``: [conditional input bias] -> 3x3 conv, stride 2, 'SAME'
      -> [conditional output gain] -> activation;
    spatial mean -> Dense(features[-1]) -> activation -> un-normalised Dense(1).
  Stride-2 'SAME' convs and mean pooling make it work for any H, W >= 1 (8x8 digits end at
  1x1 with the default three stages) with an energy scale independent of image size.
  All convs and the hidden Dense are spectrally normalised when ``spectral_norm``.

  Attributes:
    features: widths of the stride-2 stages.
    num_classes: None (unconditional) or K: y is int ids [B] or float vectors [B, K].
    activation: "swish" or "leaky_relu" (slope 0.2), or any name in ``ACTIVATIONS``.
    spectral_norm: spectrally normalise convs and hidden Dense (collection 'spectral').
    dtype: computation dtype; params are ``param_dtype``; energies are always float32.
  """

  features: Sequence[int] = (64, 128, 256)
  num_classes: int | None = None
  activation: str = "swish"
  spectral_norm: bool = False
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
    check_rank(x, 4, "[B, H, W, C]", "ConvEnergy")
    cond = condition_vector(y, self.num_classes, x.shape[0], "ConvEnergy")
    act = get_activation(self.activation)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    sn = dict(spectral_norm=self.spectral_norm, **kw)
    h = act(SNConv(self.features[0], name="stem", **sn)(x, update_stats=update_stats))
    for i, width in enumerate(self.features):
      if cond is not None:
        h = CondBias(name=f"cond_bias_{i}", **kw)(h, cond)
      h = SNConv(width, strides=2, name=f"conv_{i}", **sn)(h, update_stats=update_stats)
      if cond is not None:
        h = CondGain(name=f"cond_gain_{i}", **kw)(h, cond)
      h = act(h)
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    h = act(SNDense(self.features[-1], name="dense", **sn)(h, update_stats=update_stats))
    energy = SNDense(1, name="energy", dtype=jnp.float32, param_dtype=self.param_dtype)(
      h.astype(jnp.float32)
    )
    return energy[:, 0]
