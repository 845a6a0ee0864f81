"""A small Gaussian VAE for vector data (a generator baseline of ``experiments/modes.py``).

Encoder and decoder are MLPs; the decoder outputs a mean and the observation noise is one learned
std per dimension, so the model is p(x) = integral N(x; decoder(z), diag(sigma^2)) N(z; 0, I) dz.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class VAE(nn.Module):
  """Gaussian VAE on x [B, D].

  Attributes:
    hidden_sizes: widths of the encoder's and (the same) the decoder's hidden layers.
    latent_dim: dimension of z (prior N(0, I)).
    data_dim: D.
  """

  hidden_sizes: Sequence[int] = (128, 128)
  latent_dim: int = 2
  data_dim: int = 2

  def setup(self):
    self.encoder = [nn.Dense(w) for w in self.hidden_sizes] + [nn.Dense(2 * self.latent_dim)]
    self.decoder = [nn.Dense(w) for w in self.hidden_sizes] + [nn.Dense(self.data_dim)]
    self.log_sigma = self.param("log_sigma", nn.initializers.zeros, (self.data_dim,))

  @staticmethod
  def _mlp(layers, h):
    for layer in layers[:-1]:
      h = nn.swish(layer(h))
    return layers[-1](h)

  def encode(self, x):
    """x [B, D] -> (mean [B, latent_dim], log variance [B, latent_dim]) of q(z | x)."""
    out = self._mlp(self.encoder, x)
    return out[:, : self.latent_dim], out[:, self.latent_dim :]

  def decode(self, z):
    """z [B, latent_dim] -> the mean [B, D] of p(x | z)."""
    return self._mlp(self.decoder, z)

  def __call__(self, x, rng_key):
    """The one-sample ELBO of each example, [B] (nats; <= log p(x)).

    x: [B, D] float32; rng_key: PRNG key of the reparameterised z.
    """
    mean, logvar = self.encode(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng_key, mean.shape)
    sigma2 = jnp.exp(2 * self.log_sigma)
    recon = -0.5 * jnp.sum(
      (x - self.decode(z)) ** 2 / sigma2 + 2 * self.log_sigma + jnp.log(2 * jnp.pi), axis=-1
    )
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)
    return recon - kl

  def sample(self, rng_key, num: int):
    """[num, D] samples: z ~ N(0, I), x = decoder(z) + sigma * N(0, I)."""
    z_key, x_key = jax.random.split(rng_key)
    z = jax.random.normal(z_key, (num, self.latent_dim))
    noise = jax.random.normal(x_key, (num, self.data_dim))
    return self.decode(z) + jnp.exp(self.log_sigma) * noise
