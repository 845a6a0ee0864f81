"""Annealed importance sampling (AIS): stochastic bounds on log Z of p(x) ∝ exp(-E(x)) on a box.

The path runs from a tractable base π_0 ∝ exp(-U_0) (uniform on the box, or a truncated diagonal
Gaussian) to the model: π_β(x) ∝ exp(-(1 - β) U_0(x) - β E(x)) on [low, high]^D, 0 = β_0 < ... <
β_{K-1} = 1. Every level runs one HMC transition whose leapfrog path reflects off the box walls
(reflection keeps leapfrog volume-preserving and reversible, so the Metropolis test leaves π_β
exactly invariant). Step sizes per level come from a separate pilot run (``tune_step_sizes``) and
are then frozen, so each transition is a fixed Markov kernel and the bounds below are sound.

- Forward chains start at exact base samples: E[w] = Z / Z_0, so log Z_0 + log mean w is a
  stochastic lower bound of log Z (below it in expectation and with high probability).
- Reverse chains start at exact samples of π_1 and anneal down: E[w] = Z_0 / Z, so
  log Z_0 - log mean w is a stochastic upper bound (Grosse et al. 2015, "BDMC"). Started anywhere
  else (data, or the model's own Langevin samples) the reverse estimate is not a bound.

Usage::

    base = jebm.ais.uniform_base((28, 28, 1), 0.0, 1.0)
    betas = jebm.ais.sigmoid_schedule(1000)
    steps = jebm.ais.tune_step_sizes(key1, energy_fn, base, betas, num_chains=8)
    log_w, acceptance = jebm.ais.anneal(key2, energy_fn, base, betas, base.sample(key3, 64), steps)
    log_z_lower = base.log_z + jebm.ais.log_mean_exp(log_w)
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

from jebm.energy import EnergyFn, energy_and_grad

TARGET_ACCEPTANCE = 0.65  # HMC's optimal acceptance rate in high dimension (Beskos et al. 2013)


class Base(NamedTuple):
  """A tractable start of the path, restricted to the box [low, high].

  Attributes:
    energy: unnormalised energy U_0(x [B, ...]) -> [B].
    log_z: log of the normaliser of exp(-U_0) over the box (a float).
    sample: ``sample(rng_key, num) -> [num, *example_shape]``, exact samples of π_0.
    low, high: the box, float arrays of the example's shape.
  """

  energy: Callable[[jax.Array], jax.Array]
  log_z: float
  sample: Callable[[jax.Array, int], jax.Array]
  low: jax.Array
  high: jax.Array


def _sum_example(v: jax.Array) -> jax.Array:
  return jnp.sum(v.reshape(v.shape[0], -1), axis=1)


def _check_box(example_shape, low, high):
  low = jnp.broadcast_to(jnp.asarray(low, jnp.float32), example_shape)
  high = jnp.broadcast_to(jnp.asarray(high, jnp.float32), example_shape)
  if not (jnp.all(jnp.isfinite(low)) and jnp.all(jnp.isfinite(high)) and jnp.all(low < high)):
    raise ValueError(
      "AIS needs a bounded domain: finite low < high on every coordinate (a uniform or truncated "
      f"base has no normaliser otherwise), got low in [{float(low.min())}, {float(low.max())}], "
      f"high in [{float(high.min())}, {float(high.max())}]"
    )
  return low, high


def uniform_base(example_shape, low=0.0, high=1.0) -> Base:
  """The uniform distribution on the box [low, high]^D (U_0 = 0).

  Args:
    example_shape: the shape of one example, e.g. (28, 28, 1).
    low, high: the box, floats or arrays broadcastable to example_shape.
  """
  example_shape = tuple(example_shape)
  low, high = _check_box(example_shape, low, high)

  def sample(rng_key, num):
    return jax.random.uniform(rng_key, (num, *example_shape), minval=low, maxval=high)

  return Base(
    energy=lambda x: jnp.zeros(x.shape[0], x.dtype),
    log_z=float(jnp.sum(jnp.log(high - low))),
    sample=sample,
    low=low,
    high=high,
  )


def _log_normal_mass(a: jax.Array, b: jax.Array) -> jax.Array:
  """log(Φ(b) - Φ(a)) for a < b, computed in the smaller tail."""
  flip = a > 0
  a, b = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
  log_b, log_a = log_ndtr(b), log_ndtr(a)
  return log_b + jnp.log1p(-jnp.exp(log_a - log_b))


def truncated_normal_log_z(mean, std, low, high) -> float:
  """log ∫_box exp(-sum((x - mean)^2 / (2 std^2))) dx, in closed form (erf): the normaliser of a
  diagonal Gaussian restricted to the box [low, high]. Arrays broadcast together."""
  mean, std, low, high = (jnp.asarray(v, jnp.float32) for v in (mean, std, low, high))
  mass = _log_normal_mass((low - mean) / std, (high - mean) / std)
  return float(jnp.sum(jnp.log(std) + 0.5 * math.log(2 * math.pi) + mass))


def truncated_normal_base(mean, std, low=0.0, high=1.0) -> Base:
  """A diagonal Gaussian N(mean, std^2) restricted to the box [low, high]^D.

  Args:
    mean, std: arrays of the example's shape (std > 0), e.g. per-pixel moments of training data.
    low, high: the box, floats or arrays broadcastable to mean's shape.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  if mean.shape != std.shape or not bool(jnp.all(std > 0)):
    raise ValueError(
      f"truncated_normal_base needs mean and std of one shape and std > 0, got shapes "
      f"{mean.shape}, {std.shape}"
    )
  low, high = _check_box(mean.shape, low, high)
  a, b = (low - mean) / std, (high - mean) / std

  def energy(x):
    return _sum_example(jnp.square(x - mean) / (2 * jnp.square(std)))

  def sample(rng_key, num):
    z = jax.random.truncated_normal(rng_key, a, b, (num, *mean.shape))
    return jnp.clip(mean + std * z, low, high)

  return Base(energy, truncated_normal_log_z(mean, std, low, high), sample, low, high)


def sigmoid_schedule(num_temperatures: int, sharpness: float = 4.0) -> jax.Array:
  """[num_temperatures] inverse temperatures from exactly 0 to exactly 1, dense at both ends
  (Grosse et al. 2015's sigmoid schedule; ``sharpness`` = their δ)."""
  check_num_temperatures(num_temperatures)
  s = jax.nn.sigmoid(sharpness * jnp.linspace(-1.0, 1.0, num_temperatures))
  return (s - s[0]) / (s[-1] - s[0])


def check_num_temperatures(num_temperatures) -> None:
  """ValueError unless ``num_temperatures`` is an int >= 2 (the two ends of the path)."""
  if isinstance(num_temperatures, bool) or not isinstance(num_temperatures, int):
    raise ValueError(f"the number of temperatures must be an int, got {num_temperatures!r}")
  if num_temperatures < 2:
    raise ValueError(
      f"the number of temperatures must be >= 2 (base and model), got {num_temperatures}"
    )


def log_mean_exp(log_w: jax.Array) -> jax.Array:
  """log(mean(exp(log_w))) over the last axis, computed stably: [..., C] -> [...]."""
  return jax.nn.logsumexp(log_w, axis=-1) - math.log(log_w.shape[-1])


def _reflect(x, p, low, high):
  """Folds x back into [low, high] as a ball bouncing off the walls; p flips sign once per
  bounce, so only an odd number of bounces flips it."""
  width = high - low
  y = (x - low) / width
  r = jnp.mod(y, 2.0)
  odd = r > 1.0
  return low + width * jnp.where(odd, 2.0 - r, r), jnp.where(odd, -p, p)


class _Point(NamedTuple):
  x: jax.Array  # [C, ...]
  u0: jax.Array  # [C] base energy
  e: jax.Array  # [C] model energy
  g0: jax.Array  # [C, ...] their gradients
  ge: jax.Array


def _point(x, energy_fn, base, y) -> _Point:
  u0, g0 = energy_and_grad(lambda x_, _=None: base.energy(x_), x)
  e, ge = energy_and_grad(energy_fn, x, y)
  return _Point(x, u0, e, g0, ge)


def _hmc(rng_key, point, beta, step_size, energy_fn, base, y, leapfrog_steps):
  """One HMC transition of π_β with reflecting walls; returns (new point, acceptance [C])."""
  momentum_key, accept_key = jax.random.split(rng_key)
  potential = lambda q: (1 - beta) * q.u0 + beta * q.e
  force = lambda q: (1 - beta) * q.g0 + beta * q.ge
  p0 = jax.random.normal(momentum_key, point.x.shape, point.x.dtype)
  p = p0 - 0.5 * step_size * force(point)
  q = point
  for i in range(leapfrog_steps):
    x, p = _reflect(q.x + step_size * p, p, base.low, base.high)
    q = _point(x, energy_fn, base, y)
    if i < leapfrog_steps - 1:
      p = p - step_size * force(q)
  p = p - 0.5 * step_size * force(q)
  log_ratio = potential(point) - potential(q) + 0.5 * (_sum_example(p0**2) - _sum_example(p**2))
  log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
  accept = jnp.log(jax.random.uniform(accept_key, log_ratio.shape)) < log_ratio
  keep = lambda new, old: jnp.where(accept.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
  return jax.tree.map(keep, q, point), jnp.minimum(1.0, jnp.exp(log_ratio))


def _check_path(betas, step_sizes, x0, base):
  betas = jnp.asarray(betas, jnp.float32)
  if betas.ndim != 1 or betas.shape[0] < 2:
    raise ValueError(f"betas must be a 1-D path of >= 2 inverse temperatures, got {betas.shape}")
  if step_sizes is not None and jnp.shape(step_sizes) != betas.shape:
    raise ValueError(f"step_sizes must have the shape of betas {betas.shape}")
  if x0 is not None and tuple(x0.shape[1:]) != tuple(base.low.shape):
    raise ValueError(f"chains of shape {x0.shape} do not match the base's box {base.low.shape}")
  return betas


def anneal(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  base: Base,
  betas: jax.Array,
  x0: jax.Array,
  step_sizes: jax.Array,
  *,
  y: Optional[jax.Array] = None,
  leapfrog_steps: int = 1,
):
  """Runs AIS chains along ``betas`` from exact samples ``x0`` of π_{betas[0]}.

  Forward (betas from 0 to 1, x0 from ``base.sample``): mean(exp(log_w)) estimates Z / Z_0.
  Reverse (betas from 1 to 0, x0 exact samples of the model): it estimates Z_0 / Z.
  Level k adds (β_k - β_{k-1}) (U_0(x) - E(x)) to log w, then runs one HMC transition of π_{β_k}
  with step ``step_sizes[k]``. Jit-able; the levels run in one ``lax.scan``.

  Args:
    rng_key: PRNG key; level k uses ``fold_in(rng_key, k)``.
    energy_fn: ``E(x, y) -> [C]``.
    base: the tractable end of the path (its box bounds every chain).
    betas: [K] inverse temperatures, K >= 2.
    x0: [C, *example_shape] chain starts inside the box.
    step_sizes: [K] HMC step size of each level (entry 0 unused), e.g. from ``tune_step_sizes``.
    y: optional conditions [C, ...] of the energy.
    leapfrog_steps: leapfrog steps per HMC transition (1 = MALA with a momentum refresh).

  Returns:
    (log_w [C], mean acceptance rate of each level's transition [K - 1]).
  """
  betas = _check_path(betas, step_sizes, x0, base)
  step_sizes = jnp.asarray(step_sizes, jnp.float32)

  def level(carry, k):
    point, log_w = carry
    log_w = log_w + (betas[k] - betas[k - 1]) * (point.u0 - point.e)
    point, accept = _hmc(
      jax.random.fold_in(rng_key, k), point, betas[k], step_sizes[k], energy_fn, base, y,
      leapfrog_steps,
    )  # fmt: skip
    return (point, log_w), jnp.mean(accept)

  start = _point(x0, energy_fn, base, y)
  (_, log_w), acceptance = jax.lax.scan(
    level, (start, jnp.zeros(x0.shape[0], jnp.float32)), jnp.arange(1, betas.shape[0])
  )
  return log_w, acceptance


def tune_step_sizes(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  base: Base,
  betas: jax.Array,
  *,
  num_chains: int = 8,
  y: Optional[jax.Array] = None,
  leapfrog_steps: int = 1,
  target_acceptance: float = TARGET_ACCEPTANCE,
  initial: Optional[float] = None,
  rate: float = 0.5,
) -> jax.Array:
  """HMC step sizes per level from a pilot forward run: after each level's transition the log
  step moves by ``rate * (acceptance - target_acceptance)``; the step is capped at the box's
  smallest side. Use the result, frozen, in a separate ``anneal`` run (and reversed for reverse
  chains): the pilot's own weights are not a sound estimate.

  Args:
    rng_key, energy_fn, base, betas, y, leapfrog_steps: as in ``anneal`` (y [num_chains, ...]).
    num_chains: pilot chains.
    target_acceptance: the acceptance rate aimed for.
    initial: first step size (default 1% of the box's smallest side).

  Returns:
    [K] step sizes, entry k for level k (entry 0 repeats entry 1).
  """
  betas = _check_path(betas, None, None, base)
  max_log = jnp.log(jnp.min(base.high - base.low))
  init_log = max_log + math.log(0.01) if initial is None else jnp.log(jnp.float32(initial))

  def level(carry, k):
    point, log_step = carry
    step = jnp.exp(log_step)
    point, accept = _hmc(
      jax.random.fold_in(rng_key, k), point, betas[k], step, energy_fn, base, y, leapfrog_steps
    )
    log_step = jnp.minimum(log_step + rate * (jnp.mean(accept) - target_acceptance), max_log)
    return (point, log_step), step

  start_key, rng_key = jax.random.split(rng_key)
  start = _point(base.sample(start_key, num_chains), energy_fn, base, y)
  _, steps = jax.lax.scan(level, (start, init_log), jnp.arange(1, betas.shape[0]))
  return jnp.concatenate([steps[:1], steps])


class LogZBounds(NamedTuple):
  """Result of ``log_z_bounds``: the stochastic lower and upper bounds of log Z (upper is nan
  without reverse starts), the log weights behind them [C], and acceptance rates per level."""

  lower: jax.Array
  upper: jax.Array
  forward_log_w: jax.Array
  reverse_log_w: Optional[jax.Array]
  forward_acceptance: jax.Array
  reverse_acceptance: Optional[jax.Array]


def log_z_bounds(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  base: Base,
  num_temperatures: int,
  num_chains: int,
  *,
  reverse_starts: Optional[jax.Array] = None,
  y: Optional[jax.Array] = None,
  leapfrog_steps: int = 1,
  pilot_chains: int = 8,
) -> LogZBounds:
  """Bounds on log Z of exp(-E) over the base's box: a pilot run tunes step sizes on the sigmoid
  schedule of ``num_temperatures`` levels, then forward chains give the lower bound and, given
  ``reverse_starts``, reverse chains the upper bound (sound only when those are exact samples).

  Args:
    rng_key: PRNG key.
    energy_fn, base: the model and the tractable start.
    num_temperatures: K >= 2 levels.
    num_chains: C forward chains.
    reverse_starts: optional [C_r, *example_shape] starts of the reverse chains.
    y: optional condition of the energy, one per chain: [C, ...] (reverse chains use its first
      C_r rows, the pilot its first ``pilot_chains``).
    leapfrog_steps: leapfrog steps per HMC transition.
    pilot_chains: chains of the step-size pilot.

  Returns:
    LogZBounds (scalars lower and upper, weights [C] and [C_r], acceptance [K - 1]).
  """
  check_num_temperatures(num_temperatures)
  betas = sigmoid_schedule(num_temperatures)
  pilot_key, start_key, forward_key, reverse_key = jax.random.split(rng_key, 4)
  rows = lambda n: None if y is None else y[:n]
  pilot_chains = min(pilot_chains, num_chains)
  steps = tune_step_sizes(
    pilot_key, energy_fn, base, betas, num_chains=pilot_chains, y=rows(pilot_chains),
    leapfrog_steps=leapfrog_steps,
  )  # fmt: skip
  x0 = base.sample(start_key, num_chains)
  forward, forward_acc = anneal(
    forward_key, energy_fn, base, betas, x0, steps, y=y, leapfrog_steps=leapfrog_steps
  )
  lower = base.log_z + log_mean_exp(forward)
  if reverse_starts is None:
    return LogZBounds(lower, jnp.float32(jnp.nan), forward, None, forward_acc, None)
  reverse, reverse_acc = anneal(
    reverse_key, energy_fn, base, betas[::-1], reverse_starts, steps[::-1],
    y=rows(reverse_starts.shape[0]), leapfrog_steps=leapfrog_steps,
  )  # fmt: skip
  upper = base.log_z - log_mean_exp(reverse)
  return LogZBounds(lower, upper, forward, reverse, forward_acc, reverse_acc)
