"""Latent traversal (the paper's ``latent`` task): the directions in which the energy around an
image curves most are the Hessian's top eigenvectors; moving the image along them and letting
Langevin refine it shows what the model treats as its factors of variation.

    values, directions = hessian_directions(energy_fn, x, k=3)    # x: one image [H, W, C]
    grid = traverse(key, energy_fn, x, directions, (-2, -1, 0, 1, 2), langevin_config)

The full Hessian of one image ([D, D], D = H * W * C: 4096 x 4096 for dSprites) comes from
``jax.hessian`` (forward mode over the reverse pass), so it suits small images.
"""

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jebm import langevin
from jebm.energy import EnergyFn
from jebm.langevin import LangevinConfig


def hessian_directions(
  energy_fn: EnergyFn,
  x: jax.Array,
  y: Optional[jax.Array] = None,
  k: int = 3,
  largest: bool = True,
) -> Tuple[jax.Array, jax.Array]:
  """The ``k`` largest (or, ``largest=False``, smallest) eigenvalues [k] of the Hessian of E at
  one example x [*S] (condition y [*C] or None) and their unit eigenvectors [k, *S], the most
  extreme first. The largest curvatures are the moves the model resists most; the smallest the
  ones it lets pass (the paper's code took these)."""
  shape = x.shape
  if not 1 <= k <= x.size:
    raise ValueError(f"k must be in [1, {x.size}] for an example of shape {shape}, got {k}")

  def energy(flat):
    condition = None if y is None else jnp.asarray(y)[None]
    return energy_fn(flat.reshape((1, *shape)), condition)[0]

  hessian = jax.hessian(energy)(jnp.ravel(x).astype(jnp.float32))
  values, vectors = jnp.linalg.eigh((hessian + hessian.T) / 2)
  order = jnp.argsort(values)
  top = (order[::-1] if largest else order)[:k]
  return values[top], vectors[:, top].T.reshape((k, *shape))


def traverse(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  x: jax.Array,
  directions: jax.Array,
  distances: Sequence[float],
  config: LangevinConfig,
  y: Optional[jax.Array] = None,
) -> jax.Array:
  """Images [k, len(distances), *S]: x [*S] moved by each distance along each direction [k, *S],
  each then refined by ``config`` Langevin steps (under condition y [*C] if given)."""
  distances = jnp.asarray(distances, jnp.float32)
  k, n = directions.shape[0], distances.shape[0]
  moved = x[None, None] + distances[None, :, *(None,) * x.ndim] * directions[:, None]
  flat = moved.reshape((k * n, *x.shape))
  condition = None if y is None else jnp.broadcast_to(jnp.asarray(y), (k * n, *jnp.shape(y)))
  refined, _ = langevin.sample(rng_key, energy_fn, flat, config, y=condition)
  return refined.reshape((k, n, *x.shape))
