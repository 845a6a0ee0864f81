"""RealNVP (Dinh et al. 2017) for 2-D data: affine coupling layers on a standard normal base (a
generator baseline of ``experiments/modes.py``).

Layer k transforms coordinate k mod 2 given the other: y_d = x_d * exp(s(x_o)) + t(x_o), with
s = scale * tanh(.) bounded; its log-determinant is s. ``forward`` maps data to the base space,
``inverse`` maps base samples to data, and log p(x) = log N(forward(x); 0, I) + sum of log-dets.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class AffineCoupling(nn.Module):
  """One affine coupling of 2-D points: transforms coordinate ``dim``, conditioned on the other.

  Attributes:
    dim: 0 or 1, the coordinate transformed.
    hidden_sizes: widths of the MLP giving (s, t) from the other coordinate.
  """

  dim: int
  hidden_sizes: Sequence[int] = (64, 64)

  def setup(self):
    self.layers = [nn.Dense(w) for w in self.hidden_sizes] + [
      nn.Dense(2, kernel_init=nn.initializers.zeros)  # starts as the identity
    ]
    self.scale = self.param("scale", nn.initializers.ones, ())

  def _shift_scale(self, other):
    h = other
    for layer in self.layers[:-1]:
      h = nn.swish(layer(h))
    out = self.layers[-1](h)
    return self.scale * jnp.tanh(out[:, 0]), out[:, 1]

  def forward(self, x):
    """x [B, 2] -> (y [B, 2], log |det dy/dx| [B])."""
    s, t = self._shift_scale(x[:, 1 - self.dim : 2 - self.dim])
    y = x.at[:, self.dim].set(x[:, self.dim] * jnp.exp(s) + t)
    return y, s

  def inverse(self, y):
    """y [B, 2] -> x [B, 2], the inverse of ``forward``."""
    s, t = self._shift_scale(y[:, 1 - self.dim : 2 - self.dim])
    return y.at[:, self.dim].set((y[:, self.dim] - t) * jnp.exp(-s))


class RealNVP(nn.Module):
  """A stack of ``num_layers`` affine couplings alternating the coordinate, base N(0, I).

  Attributes:
    num_layers: number of couplings.
    hidden_sizes: widths of each coupling's MLP.
  """

  num_layers: int = 8
  hidden_sizes: Sequence[int] = (64, 64)

  def setup(self):
    self.couplings = [AffineCoupling(k % 2, self.hidden_sizes) for k in range(self.num_layers)]

  def forward(self, x):
    """Data x [B, 2] -> (base point z [B, 2], total log |det dz/dx| [B])."""
    logdet = jnp.zeros(x.shape[0])
    for coupling in self.couplings:
      x, ld = coupling.forward(x)
      logdet = logdet + ld
    return x, logdet

  def inverse(self, z):
    """Base point z [B, 2] -> data x [B, 2]."""
    for coupling in reversed(self.couplings):
      z = coupling.inverse(z)
    return z

  def __call__(self, x):
    """log p(x) [B] (nats) of points x [B, 2]."""
    z, logdet = self.forward(x)
    return jnp.sum(jax.scipy.stats.norm.logpdf(z), axis=-1) + logdet

  def sample(self, rng_key, num: int):
    """[num, 2] samples: the inverse of N(0, I) draws."""
    return self.inverse(jax.random.normal(rng_key, (num, 2)))
