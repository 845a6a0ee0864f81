"""Next-state regressors, the trajectory EBM's baselines (``experiments/trajectories.py``).

MLPRegressor:  condition [B, C] (past states and action) -> prediction [B, D]
GRURegressor:  inputs [B, T, F] (state and action of each step) -> predictions [B, T, D];
               ``step(carry, input [B, F]) -> (carry, prediction [B, D])`` for rollouts.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLPRegressor(nn.Module):
  """A feed-forward regressor: Dense -> swish for each width, then Dense to ``out_dim``."""

  hidden_sizes: Sequence[int] = (256, 256, 256)
  out_dim: int = 1

  @nn.compact
  def __call__(self, c: jax.Array) -> jax.Array:
    """Predictions [B, out_dim] float32 of inputs c [B, C]."""
    h = c
    for width in self.hidden_sizes:
      h = nn.swish(nn.Dense(width)(h))
    return nn.Dense(self.out_dim)(h)


class GRURegressor(nn.Module):
  """A recurrent regressor: a GRU over the inputs, a Dense head on each step's hidden state."""

  hidden_size: int = 256
  out_dim: int = 1

  def setup(self):
    self.cell = nn.GRUCell(self.hidden_size)
    self.head = nn.Dense(self.out_dim)

  def initial_carry(self, batch_size: int) -> jax.Array:
    """The zero hidden state [B, hidden_size]."""
    return jnp.zeros((batch_size, self.hidden_size), jnp.float32)

  def step(self, carry: jax.Array, x: jax.Array):
    """(carry [B, H], input [B, F]) -> (new carry [B, H], prediction [B, out_dim])."""
    carry, h = self.cell(carry, x)
    return carry, self.head(h)

  def __call__(self, xs: jax.Array) -> jax.Array:
    """Predictions [B, T, out_dim] for inputs xs [B, T, F], the GRU run from a zero state."""
    scan = nn.scan(
      lambda module, carry, x: module.step(carry, x),
      variable_broadcast="params",
      split_rngs={"params": False},
      in_axes=1,
      out_axes=1,
    )
    _, ys = scan(self, self.initial_carry(xs.shape[0]), xs)
    return ys
