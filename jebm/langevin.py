"""Langevin dynamics on an energy fn: the IGEBM sampler, its Metropolis-adjusted variant and
adaptive computation time.

blackjax-style: ``init(x, energy_fn) -> state``, ``step(rng_key, state, energy_fn, config) ->
(state, info)``. A batch x [B, ...] holds B independent chains (examples never interact in an energy
fn, so one gradient of the summed energy gives every chain's gradient). ``sample`` runs a whole chain
in one ``lax.scan``, ``sample_ensemble`` one whose steps cycle through several energies (historical
ensembles), ``sample_adaptive`` one that stops when the energy settles; nothing here calls
``jax.jit``: the caller does.

The IGEBM step (Du & Mordatch 2019), in this order:
  x' = x + noise_scale * N(0, I)                 # noise
  g  = clip(∇E(x'))                              # gradient at the noisy point, clipped
  x  = clamp(x' - step_size * g, x_min, x_max)   # descend the energy, stay in the data range
Step size and noise scale are independent, as in the paper (e.g. step 10, noise 0.005 on images).
With noise_scale = sqrt(2 * step_size), no clipping and no clamping it is textbook (unadjusted)
Langevin dynamics at temperature 1, whose samples approach p(x) ∝ exp(-E(x)) as step_size -> 0.
Setting ``metropolis=True`` adds a Metropolis-Hastings correction (MALA), which makes the chain exact
for any step size: p(x) restricted to the box [x_min, x_max] (proposals outside are rejected).
"""

import dataclasses
from typing import NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jebm.energy import EnergyFn, energy_and_grad

CLIP_MODES = ("elementwise", "norm")


@dataclasses.dataclass(frozen=True)
class LangevinConfig:
  """Sampler settings; validated on construction (ValueError names the bad field).

  Attributes:
    num_steps: Langevin steps per ``sample`` call (≥ 0).
    step_size: gradient step, x -= step_size * grad (> 0).
    noise_scale: standard deviation of the Gaussian noise added each step (≥ 0).
    grad_clip: None for no clipping, else > 0: the bound of the clip.
    clip_mode: "elementwise" clips each gradient entry to ±grad_clip; "norm" rescales each
      example's gradient to L2 norm ≤ grad_clip.
    x_min, x_max: samples are clamped to [x_min, x_max]; None leaves that side unbounded.
    metropolis: if True, accept or reject each step with the MALA correction (exact sampling).
  """

  num_steps: int = 60
  step_size: float = 10.0
  noise_scale: float = 0.005
  grad_clip: Optional[float] = 0.01
  clip_mode: str = "elementwise"
  x_min: Optional[float] = 0.0
  x_max: Optional[float] = 1.0
  metropolis: bool = False

  def __post_init__(self):
    if (
      not isinstance(self.num_steps, int) or isinstance(self.num_steps, bool) or self.num_steps < 0
    ):
      raise ValueError(f"LangevinConfig.num_steps must be an int ≥ 0, got {self.num_steps!r}")
    if not self.step_size > 0:
      raise ValueError(f"LangevinConfig.step_size must be > 0, got {self.step_size!r}")
    if not self.noise_scale >= 0:
      raise ValueError(f"LangevinConfig.noise_scale must be ≥ 0, got {self.noise_scale!r}")
    if self.grad_clip is not None and not self.grad_clip > 0:
      raise ValueError(f"LangevinConfig.grad_clip must be None or > 0, got {self.grad_clip!r}")
    if self.clip_mode not in CLIP_MODES:
      raise ValueError(
        f"LangevinConfig.clip_mode must be one of {CLIP_MODES}, got {self.clip_mode!r}"
      )
    if self.x_min is not None and self.x_max is not None and not self.x_min < self.x_max:
      raise ValueError(
        f"LangevinConfig needs x_min < x_max, got x_min={self.x_min}, x_max={self.x_max}"
      )
    if self.metropolis and self.noise_scale == 0:
      raise ValueError("LangevinConfig.noise_scale must be > 0 when metropolis=True")


class LangevinState(NamedTuple):
  """Chains: x [B, ...]; energy [B] and grad [B, ...] of E at the last evaluation point."""

  x: jax.Array
  energy: jax.Array
  grad: jax.Array


class LangevinInfo(NamedTuple):
  """Per-step diagnostics, each [B]: energy at the gradient point, L2 norm of the unclipped input
  gradient, and the acceptance probability (1 for the unadjusted IGEBM step)."""

  energy: jax.Array
  grad_norm: jax.Array
  acceptance: jax.Array


def _per_example_norm(v: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))


def _expand(per_example: jax.Array, like: jax.Array) -> jax.Array:
  return per_example.reshape(per_example.shape + (1,) * (like.ndim - 1))


def clip_grad(grad: jax.Array, config: LangevinConfig) -> jax.Array:
  """Clips a batch of input gradients [B, ...] as ``config`` says (no-op when grad_clip is None)."""
  if config.grad_clip is None:
    return grad
  if config.clip_mode == "elementwise":
    return jnp.clip(grad, -config.grad_clip, config.grad_clip)
  norm = _per_example_norm(grad)
  return grad * _expand(jnp.minimum(1.0, config.grad_clip / (norm + 1e-12)), grad)


def clamp(x: jax.Array, config: LangevinConfig, box=None) -> jax.Array:
  """Clamps x to [x_min, x_max] (an unbounded side is left alone), then into ``box``, an
  optional pair (low, high) of arrays broadcastable to x."""
  if config.x_min is not None or config.x_max is not None:
    x = jnp.clip(x, config.x_min, config.x_max)
  return x if box is None else jnp.clip(x, box[0], box[1])


def _check_x(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"Langevin chains need x of shape [B, ...] with B chains, got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
      f"Langevin chains need floating-point x, got dtype {x.dtype}; "
      "convert uint8 images to float in [0, 1] first"
    )
  return x


def init(x: jax.Array, energy_fn: EnergyFn) -> LangevinState:
  """Starts chains at x [B, ...]: evaluates the energy [B] and its gradient [B, ...] there."""
  x = _check_x(x)
  energy, grad = energy_and_grad(energy_fn, x)
  return LangevinState(x, energy, grad)


def _masked(mask, new, old):
  return new if mask is None else jnp.where(mask, new, old)


def _igebm_step(rng_key, state, energy_fn, config, mask, box):
  noise = config.noise_scale * jax.random.normal(rng_key, state.x.shape, state.x.dtype)
  x_noisy = _masked(mask, state.x + noise, state.x)
  energy, grad = energy_and_grad(energy_fn, x_noisy)
  x_new = clamp(x_noisy - config.step_size * clip_grad(grad, config), config, box)
  x_new = _masked(mask, x_new, state.x)
  info = LangevinInfo(energy, _per_example_norm(grad), jnp.ones_like(energy))
  return LangevinState(x_new, energy, grad), info


def _log_proposal(x_to, x_from, grad_from, config, mask):
  """log q(x_to | x_from) up to a constant: Gaussian around x_from - step * clip(grad)."""
  diff = x_to - (x_from - config.step_size * clip_grad(grad_from, config))
  if mask is not None:
    diff = jnp.where(mask, diff, 0.0)
  return -jnp.sum(jnp.square(diff).reshape(diff.shape[0], -1), axis=1) / (2 * config.noise_scale**2)


def _mala_step(rng_key, state, energy_fn, config, mask, box):
  noise_key, accept_key = jax.random.split(rng_key)
  x, energy, grad = state
  noise = config.noise_scale * jax.random.normal(noise_key, x.shape, x.dtype)
  proposal = _masked(mask, x - config.step_size * clip_grad(grad, config) + noise, x)
  proposal_energy, proposal_grad = energy_and_grad(energy_fn, proposal)
  log_ratio = (
    energy
    - proposal_energy
    + _log_proposal(x, proposal, proposal_grad, config, mask)
    - _log_proposal(proposal, x, grad, config, mask)
  )
  inside = _per_example_all(clamp(proposal, config, box) == proposal)
  log_ratio = jnp.where(inside & jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
  acceptance = jnp.exp(jnp.minimum(0.0, log_ratio))
  accept = jax.random.uniform(accept_key, acceptance.shape) < acceptance
  keep = lambda new, old: jnp.where(_expand(accept, new), new, old)
  new_state = LangevinState(
    keep(proposal, x), jnp.where(accept, proposal_energy, energy), keep(proposal_grad, grad)
  )
  return new_state, LangevinInfo(proposal_energy, _per_example_norm(proposal_grad), acceptance)


def _per_example_all(b: jax.Array) -> jax.Array:
  return jnp.all(b.reshape(b.shape[0], -1), axis=1)


def step(
  rng_key: jax.Array,
  state: LangevinState,
  energy_fn: EnergyFn,
  config: LangevinConfig,
  mask: Optional[jax.Array] = None,
  box: Optional[Tuple[jax.Array, jax.Array]] = None,
):
  """One Langevin step for all chains.

  Args:
    rng_key: PRNG key for this step.
    state: chains from ``init`` or the previous step, x [B, ...].
    energy_fn: x [B, ...] -> energies [B] (fix any condition with ``jebm.compose.condition``).
    config: a LangevinConfig; ``metropolis`` selects MALA instead of the IGEBM step.
    mask: optional bool array broadcastable to x: only masked entries move (inpainting).
    box: optional (low, high), arrays broadcastable to x: chains are clamped into it after
      each step (MALA rejects proposals outside), e.g. a +-delta box around a start point.

  Returns:
    (new state, LangevinInfo with [B] energies, gradient norms and acceptance probabilities).
  """
  kernel = _mala_step if config.metropolis else _igebm_step
  return kernel(rng_key, state, energy_fn, config, mask, box)


class SampleInfo(NamedTuple):
  """Diagnostics of a whole chain: LangevinInfo fields stacked over steps, each [T, B]; ``trace``
  holds x after every step, [T, B, ...], when asked for (else None)."""

  energy: jax.Array
  grad_norm: jax.Array
  acceptance: jax.Array
  trace: Optional[jax.Array] = None


def _bind(energy_fn, y):
  return energy_fn if y is None else (lambda x, _=None: energy_fn(x, y))


def check_mask(mask, x):
  """The inpainting mask as bool, broadcastable to x [B, ...] without changing x's shape (None
  stays None); ValueError otherwise."""
  if mask is None:
    return None
  mask = jnp.asarray(mask, bool)
  try:
    fits = jnp.broadcast_shapes(mask.shape, x.shape) == x.shape
  except ValueError:
    fits = False
  if not fits:  # e.g. [H, W] against NHWC x would broadcast to [B, H, W, W]: not x's shape
    raise ValueError(
      f"mask of shape {mask.shape} does not broadcast to x of shape {x.shape} (a mask has x's "
      "shape or one that broadcasts to it, e.g. [B, H, W, 1] or [H, W, 1] for x [B, H, W, C])"
    )
  return mask


def sample(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  x0: jax.Array,
  config: LangevinConfig,
  *,
  y: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
  box: Optional[Tuple[jax.Array, jax.Array]] = None,
  return_trace: bool = False,
):
  """Runs ``config.num_steps`` Langevin steps from x0 in one ``lax.scan`` (jit-able).

  Args:
    rng_key: PRNG key; step t uses ``fold_in(rng_key, t)``.
    energy_fn: ``energy_fn(x, y) -> [B]``; low energy = likely.
    x0: chain starts [B, ...], float.
    config: LangevinConfig (static under jit).
    y: optional condition [B, ...] passed to energy_fn.
    mask: optional bool array broadcastable to x0; only masked entries are updated (inpainting:
      mask the missing pixels, the observed ones stay fixed).
    box: optional (low, high) arrays broadcastable to x0: every step ends inside it (for
      example x0 -+ delta: purification of an input that may not move far).
    return_trace: also return x after every step in ``info.trace`` [T, B, ...].

  Returns:
    (x [B, ...] after the last step, SampleInfo with [T, B] per-step diagnostics).
  """
  fn = _bind(energy_fn, y)
  x0 = _check_x(x0)
  mask = check_mask(mask, x0)
  state = init(x0, fn)

  def body(state, t):
    state, info = step(jax.random.fold_in(rng_key, t), state, fn, config, mask, box)
    return state, (info, state.x if return_trace else None)

  state, (info, trace) = jax.lax.scan(body, state, jnp.arange(config.num_steps))
  return state.x, SampleInfo(*info, trace=trace)


def sample_ensemble(
  rng_key: jax.Array,
  energy_fns: Sequence[EnergyFn],
  x0: jax.Array,
  config: LangevinConfig,
  *,
  y: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
  box: Optional[Tuple[jax.Array, jax.Array]] = None,
):
  """``sample`` whose step t descends ``energy_fns[t % k]``: the paper's historical ensemble
  (the energies of the last k checkpoints take turns). With k copies of one energy it is
  ``sample`` on that energy, step for step (same keys).

  Args:
    rng_key, x0, config, y, mask, box: as in ``sample``.
    energy_fns: k >= 1 energy fns ``E(x, y) -> [B]``, e.g. ``jebm.generate.energy_fn`` of
      several checkpoints of a run.

  Returns:
    (x [B, ...] after the last step, SampleInfo with [T, B] per-step diagnostics; no trace).
  """
  if not energy_fns:
    raise ValueError("sample_ensemble needs at least one energy fn")
  fns = [_bind(fn, y) for fn in energy_fns]
  x0 = _check_x(x0)
  mask = check_mask(mask, x0)

  def step_with(fn):
    def run(key, state):
      # MALA reuses E and its gradient at x: those of the energy whose turn it is.
      state = init(state.x, fn) if config.metropolis else state
      return step(key, state, fn, config, mask, box)

    return run

  branches = [step_with(fn) for fn in fns]

  def body(state, t):
    key = jax.random.fold_in(rng_key, t)
    return jax.lax.switch(t % len(fns), branches, key, state)

  state, info = jax.lax.scan(body, init(x0, fns[0]), jnp.arange(config.num_steps))
  return state.x, SampleInfo(*info, trace=None)


class AdaptiveInfo(NamedTuple):
  """Result of ``sample_adaptive``: steps each chain ran [B] and its last energy [B]."""

  num_steps: jax.Array
  energy: jax.Array


def sample_adaptive(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  x0: jax.Array,
  config: LangevinConfig,
  *,
  tol: float,
  max_steps: int,
  window: int = 10,
  min_steps: int = 0,
  y: Optional[jax.Array] = None,
  mask: Optional[jax.Array] = None,
):
  """Adaptive computation time: each chain runs until its energy settles.

  A chain stops once it has run at least ``max(window, min_steps)`` steps and its energy changed by
  less than ``tol`` over the last ``window`` steps, or at ``max_steps``. Stopped chains stay frozen
  while the others go on (one ``lax.while_loop``; the loop ends when every chain has stopped).
  ``config.num_steps`` is ignored.

  Args:
    rng_key, energy_fn, x0, config, y, mask: as in ``sample``.
    tol: energy-change threshold (same units as E).
    max_steps: the most steps any chain runs.
    window: steps over which the energy change is measured.
    min_steps: no chain stops before this many steps.

  Returns:
    (x [B, ...], AdaptiveInfo with steps used [B] int32 and final energies [B]).
  """
  if not (
    isinstance(window, int) and window >= 1 and isinstance(max_steps, int) and max_steps >= 1
  ):
    raise ValueError(
      f"sample_adaptive needs int window ≥ 1 and max_steps ≥ 1, got {window}, {max_steps}"
    )
  fn = _bind(energy_fn, y)
  x0 = _check_x(x0)
  mask = check_mask(mask, x0)
  state = init(x0, fn)
  batch = x0.shape[0]
  history = jnp.broadcast_to(state.energy, (window, batch))  # ring of recent energies
  done = jnp.zeros((batch,), bool)
  steps = jnp.zeros((batch,), jnp.int32)

  def cond(carry):
    t, _, _, done, _ = carry
    return (t < max_steps) & ~jnp.all(done)

  def body(carry):
    t, state, history, done, steps = carry
    new_state, _ = step(jax.random.fold_in(rng_key, t), state, fn, config, mask)
    state = jax.tree.map(lambda new, old: jnp.where(_expand(done, new), old, new), new_state, state)
    change = jnp.abs(state.energy - history[t % window])
    history = history.at[t % window].set(state.energy)
    steps = steps + (~done).astype(jnp.int32)
    done = done | ((steps >= max(window, min_steps)) & (change < tol))
    return t + 1, state, history, done, steps

  _, state, _, _, steps = jax.lax.while_loop(cond, body, (0, state, history, done, steps))
  return state.x, AdaptiveInfo(steps, state.energy)
