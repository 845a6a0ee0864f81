"""Maximum-likelihood training of the generator baselines (``jebm.models.vae.VAE``,
``jebm.models.flow.RealNVP``) on in-memory vector data, as pure functions of (data, settings, seed).

    params, losses = fit_vae(data, BaselineConfig(), seed=0)
    samples = VAE().apply({"params": params}, key, 1000, method=VAE.sample)
"""

import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import optax

from jebm.models.flow import RealNVP
from jebm.models.vae import VAE


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
  """Optimiser settings of a baseline: Adam at ``learning_rate`` (cosine decay to 0 over
  ``num_steps``), minibatches of ``batch_size`` drawn uniformly with replacement."""

  num_steps: int = 2000
  batch_size: int = 256
  learning_rate: float = 2e-3


def param_count(params) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def fit(
  loss_fn: Callable, params, data: jax.Array, config: BaselineConfig, rng_key: jax.Array
) -> Tuple[object, jax.Array]:
  """Minimises ``loss_fn(params, batch [B, D], rng_key) -> scalar`` with Adam, all steps in one
  ``lax.scan``.

  Args:
    loss_fn: the per-batch loss.
    params: initial parameters.
    data: [N, D] float32 training points.
    config: BaselineConfig.
    rng_key: PRNG key; step keys are fold_in(rng_key, step).

  Returns:
    (trained params, losses [num_steps]).
  """
  schedule = optax.cosine_decay_schedule(config.learning_rate, config.num_steps)
  optimizer = optax.adam(schedule)
  data = jnp.asarray(data, jnp.float32)

  def step(carry, i):
    params, opt_state = carry
    batch_key, loss_key = jax.random.split(jax.random.fold_in(rng_key, i))
    idx = jax.random.randint(batch_key, (config.batch_size,), 0, data.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, data[idx], loss_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  run = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), jnp.arange(config.num_steps)))
  (params, _), losses = run(params)
  return params, losses


def fit_vae(data, config: BaselineConfig, seed: int, model: VAE = VAE()):
  """Trains ``model`` by maximising the mean ELBO of ``data`` [N, D]; returns (params, losses
  [num_steps], the negative mean ELBO per step)."""
  init_key, fit_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key, jnp.zeros((1, model.data_dim)), init_key)["params"]

  def loss_fn(params, batch, key):
    return -jnp.mean(model.apply({"params": params}, batch, key))

  return fit(loss_fn, params, data, config, fit_key)


def fit_flow(data, config: BaselineConfig, seed: int, model: RealNVP = RealNVP()):
  """Trains ``model`` by maximum likelihood on ``data`` [N, 2]; returns (params, losses
  [num_steps], the negative mean log-likelihood per step)."""
  init_key, fit_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key, jnp.zeros((1, 2)))["params"]

  def loss_fn(params, batch, key):
    del key
    return -jnp.mean(model.apply({"params": params}, batch))

  return fit(loss_fn, params, data, config, fit_key)
