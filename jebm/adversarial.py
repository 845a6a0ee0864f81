"""Adversarial attacks on an energy classifier and the paper's Langevin purification defence.

The classifier of a conditional energy is logits(x) = -E(x, y) for y = 0..K-1 (predicted label =
argmin_y E(x, y)). The defence (Du & Mordatch 2019) runs, for every label y, K Langevin steps on
E(., y) from the input, each kept inside a box of +-delta around it, and classifies with the
energies of the refined images: logits_y = -E(x'_y, y).

PGD (Madry et al. 2018) maximises a loss of the logits inside the epsilon-ball around the *clean*
image, clamped to the data range. Its gradient comes from a ``loss_fn(rng_key, x, labels) -> [B]``
(``attack_loss`` of some logits), so one PGD attacks any of:
  - ``energy_logits``: the undefended classifier (exact gradients);
  - ``purified_logits(..., bpda=True)``: the defence with BPDA (the backward pass treats the
    purification as the identity: the gradient is the classifier's at the purified points);
  - ``purified_logits(..., bpda=False)``: the defence, differentiated through all purification
    steps (second derivatives of the energy; one compiled program).
Random defences are attacked with EOT: the gradient is averaged over ``eot_samples`` draws.

Everything is a pure function of explicit PRNG keys; nothing here calls ``jax.jit``.
"""

import dataclasses
import math
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import optax

from jebm import langevin
from jebm.langevin import _expand, _per_example_norm  # the sampler's per-example helpers
from jebm.energy import EnergyFn, class_energy_table, tile_classes

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")

# loss_fn(rng_key, x [B, ...], labels [B]) -> per-example loss [B], to be maximised.
LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class PGDConfig:
  """Projected gradient ascent on a loss (everything but the radius); validated on construction.

  Attributes:
    norm: "linf" (sign steps) or "l2" (steps along the L2-normalised gradient).
    num_steps: gradient steps per restart (>= 1).
    relative_step_size: each step moves relative_step_size * epsilon / num_steps (Madry et al.:
      2.5, so that a chain can cross the ball and come back).
    eot_samples: gradients averaged per step over this many draws of the loss's randomness.
    x_min, x_max: the data range every iterate is clamped to.
  """

  norm: str = "linf"
  num_steps: int = 20
  relative_step_size: float = 2.5
  eot_samples: int = 1
  x_min: float = 0.0
  x_max: float = 1.0

  def __post_init__(self):
    if self.norm not in NORMS:
      raise ValueError(f"unknown attack norm {self.norm!r}; known: {NORMS}")
    if not (isinstance(self.num_steps, int) and self.num_steps >= 1):
      raise ValueError(f"attack steps must be an int >= 1, got {self.num_steps!r}")
    if not self.relative_step_size > 0:
      raise ValueError(f"relative_step_size must be > 0, got {self.relative_step_size}")
    if not (isinstance(self.eot_samples, int) and self.eot_samples >= 1):
      raise ValueError(f"eot_samples must be an int >= 1, got {self.eot_samples!r}")
    if not self.x_min < self.x_max:
      raise ValueError(f"PGDConfig needs x_min < x_max, got {self.x_min}, {self.x_max}")


def check_epsilons(epsilons) -> Tuple[float, ...]:
  """The attack radii as floats; ValueError for a negative or non-finite one."""
  values = tuple(float(e) for e in epsilons)
  bad = [e for e in values if not (math.isfinite(e) and e >= 0)]
  if bad:
    raise ValueError(f"attack epsilons must be finite and >= 0, got {bad}")
  return values


def project(x: jax.Array, x_clean: jax.Array, epsilon, config: PGDConfig) -> jax.Array:
  """Projects x [B, ...] onto the epsilon-ball (``config.norm``) around x_clean, then clamps it
  to [x_min, x_max]. Clamping moves every entry towards x_clean (which lies in the range), so
  the result is inside both."""
  delta = x - x_clean
  if config.norm == "linf":
    delta = jnp.clip(delta, -epsilon, epsilon)
  else:
    norm = _per_example_norm(delta)
    delta = delta * _expand(jnp.minimum(1.0, epsilon / (norm + 1e-12)), delta)
  return jnp.clip(x_clean + delta, config.x_min, config.x_max)


def random_start(rng_key: jax.Array, x_clean: jax.Array, epsilon, config: PGDConfig) -> jax.Array:
  """A uniform draw from the epsilon-ball around x_clean [B, ...], clamped to the range."""
  if config.norm == "linf":
    delta = epsilon * jax.random.uniform(rng_key, x_clean.shape, minval=-1.0, maxval=1.0)
  else:
    direction_key, radius_key = jax.random.split(rng_key)
    direction = jax.random.normal(direction_key, x_clean.shape)
    direction = direction / _expand(_per_example_norm(direction) + 1e-12, direction)
    dim = x_clean[0].size
    radius = epsilon * jax.random.uniform(radius_key, x_clean.shape[:1]) ** (1.0 / dim)
    delta = direction * _expand(radius, direction)
  return project(x_clean + delta, x_clean, epsilon, config)


def loss_gradient(rng_key: jax.Array, loss_fn: LossFn, x, labels, eot_samples: int = 1):
  """Gradient [B, ...] of the summed per-example loss at x, averaged over ``eot_samples`` keys
  (expectation over transformation; one key when the loss is deterministic)."""

  def one(key):
    return jax.grad(lambda x_: jnp.sum(loss_fn(key, x_, labels)))(x)

  if eot_samples == 1:
    return one(rng_key)
  return jax.lax.map(one, jax.random.split(rng_key, eot_samples)).mean(axis=0)


def pgd(
  rng_key: jax.Array, loss_fn: LossFn, x_clean, labels, epsilon, config: PGDConfig
) -> jax.Array:
  """One restart of PGD: a random start in the ball, then ``config.num_steps`` ascent steps on
  ``loss_fn``, each projected onto the ball around ``x_clean`` and the data range (one
  ``lax.fori_loop``; jit-able, with ``epsilon`` static or traced).

  Args:
    rng_key: PRNG key of the random start and of the loss's randomness (EOT).
    loss_fn: ``loss_fn(rng_key, x [B, ...], labels [B]) -> [B]``, maximised.
    x_clean: [B, ...] clean inputs in [x_min, x_max].
    labels: [B] true labels.
    epsilon: radius of the ball (>= 0; 0 returns x_clean).
    config: PGDConfig.

  Returns:
    x_adv [B, ...], inside the ball around x_clean and the range.
  """
  if isinstance(epsilon, (int, float)):
    check_epsilons([epsilon])
  alpha = config.relative_step_size * epsilon / config.num_steps
  start_key, steps_key = jax.random.split(rng_key)

  def body(t, x):
    g = loss_gradient(jax.random.fold_in(steps_key, t), loss_fn, x, labels, config.eot_samples)
    if config.norm == "linf":
      direction = jnp.sign(g)
    else:
      direction = g / _expand(_per_example_norm(g) + 1e-12, g)
    return project(x + alpha * direction, x_clean, epsilon, config)

  x0 = random_start(start_key, x_clean, epsilon, config)
  return jax.lax.fori_loop(0, config.num_steps, body, x0)


def attack_loss(logits: jax.Array, labels: jax.Array, kind: str = "ce") -> jax.Array:
  """Per-example loss [B] of logits [B, K] that an attack maximises: "ce" the cross-entropy,
  "margin" max_{j != y} logit_j - logit_y (Carlini & Wagner; positive = misclassified)."""
  if kind == "ce":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if kind == "margin":
    true = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return jnp.max(others, axis=1) - true
  raise ValueError(f"unknown attack loss {kind!r}; known: {LOSSES}")


def energy_logits(energy_fn: EnergyFn, x: jax.Array, num_classes: int, temperature: float = 1.0):
  """The energy classifier's logits -E(x, y) / temperature for y = 0..K-1: x [B, ...] -> [B, K]
  (one energy call on K * B examples; differentiable)."""
  return -class_energy_table(energy_fn, x, num_classes) / temperature


def purify(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  x: jax.Array,
  num_classes: int,
  sampler: langevin.LangevinConfig,
  delta: float,
) -> jax.Array:
  """The paper's defence: for every label y, ``sampler.num_steps`` Langevin steps on E(., y) from
  x, each kept within +-delta of x (and the sampler's range).

  Args:
    rng_key: PRNG key of the Langevin noise.
    energy_fn: conditional energy ``E(x [N, ...], y int [N]) -> [N]``; low = likely.
    x: [B, ...] inputs (e.g. attacked images).
    num_classes: K.
    sampler: LangevinConfig of the purification chains.
    delta: half-width of the box around x (>= 0).

  Returns:
    refined images [K, B, ...]: entry [y, b] is x[b] refined under label y.
  """
  tiled, ids = tile_classes(x, num_classes)
  refined, _ = langevin.sample(
    rng_key, energy_fn, tiled, sampler, y=ids, box=(tiled - delta, tiled + delta)
  )
  return refined.reshape((num_classes,) + x.shape)


def purified_logits(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  x: jax.Array,
  num_classes: int,
  sampler: langevin.LangevinConfig,
  delta: float,
  *,
  num_chains: int = 1,
  temperature: float = 1.0,
  bpda: bool = False,
) -> jax.Array:
  """Logits [B, K] of the defended classifier: -E(x'_y, y) / temperature with x'_y the input
  purified under label y (``purify``), averaged over ``num_chains`` independent purifications
  (the EOT defence).

  With ``bpda`` the purification is the identity on the backward pass (x'_y = x +
  stop_gradient(x'_y - x)), so the gradient with respect to x is the sum over labels of the
  classifier's gradient at the purified points; without it JAX differentiates the chains.
  """

  def one(key):
    refined = purify(key, energy_fn, x, num_classes, sampler, delta)
    if bpda:
      refined = x[None] + jax.lax.stop_gradient(refined - x[None])
    _, ids = tile_classes(x, num_classes)
    energies = energy_fn(refined.reshape((-1,) + x.shape[1:]), ids)
    return -energies.reshape(num_classes, x.shape[0]).T / temperature

  if num_chains == 1:
    return one(rng_key)
  return jax.lax.map(one, jax.random.split(rng_key, num_chains)).mean(axis=0)
