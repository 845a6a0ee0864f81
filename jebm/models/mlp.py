"""MLP energy for 2-D toy densities and other vector data."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jebm.models.conditioning import CondBias, CondGain, check_rank, condition_vector
from jebm.models.spectral import SNDense, get_activation

Dtype = Any


class MLPEnergy(nn.Module):
  """Energy E(x) or E(x, y) of vectors x [B, D]; returns energies [B] float32.

  Sign convention: p(x) ∝ exp(-E(x)), low energy = likely. Examples never interact.

  Layout: for each width in ``hidden_sizes``, Dense (spectrally normalised if
  ``spectral_norm``) -> [conditional gain and bias if conditional] -> activation; then an
  un-normalised Dense to one output (like the IGEBM code's final layer).

  Attributes:
    hidden_sizes: widths of the hidden layers.
    activation: name in ``jebm.models.ACTIVATIONS`` ("swish", "leaky_relu", ...).
    num_classes: None (unconditional) or K: y is int ids [B] or float vectors [B, K].
    spectral_norm: spectrally normalise the hidden layers (state in collection 'spectral').
    cond_gain_init_std: std of the random init of the conditional gains (0 = zeros, IGEBM's);
      see ``CondGain``.
    dtype: computation dtype; params are ``param_dtype``; energies are always float32.
  """

  hidden_sizes: Sequence[int] = (128, 128, 128)
  activation: str = "swish"
  num_classes: int | None = None
  spectral_norm: bool = False
  cond_gain_init_std: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, y: jax.Array | None = None, *, update_stats: bool = False
  ) -> jax.Array:
    """Energies [B] float32 of x [B, D] (condition y: None, int [B] or float [B, K]).

    ``update_stats=True`` advances the spectral-norm power iteration (pass
    ``mutable=['spectral']``); False is pure.
    """
    check_rank(x, 2, "[B, D]", "MLPEnergy")
    cond = condition_vector(y, self.num_classes, x.shape[0], "MLPEnergy")
    act = get_activation(self.activation)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = x
    for i, width in enumerate(self.hidden_sizes):
      h = SNDense(width, spectral_norm=self.spectral_norm, name=f"dense_{i}", **kw)(
        h, update_stats=update_stats
      )
      if cond is not None:
        h = CondBias(name=f"cond_bias_{i}", **kw)(
          CondGain(name=f"cond_gain_{i}", cond_init_std=self.cond_gain_init_std, **kw)(h, cond),
          cond,
        )
      h = act(h)
    energy = SNDense(1, name="energy", dtype=jnp.float32, param_dtype=self.param_dtype)(
      h.astype(jnp.float32)
    )
    return energy[:, 0]
