"""Trajectory models trained on state windows: the trajectory EBM and its two baselines.

  EBM: E(change | condition), an ``MLPEnergy`` whose condition vector is the window of the last k
       standardised states (and the action): jebm's contrastive divergence with replayed
       Langevin chains. Its prediction is the lowest-energy of ``predict_chains`` Langevin chains
       from N(0, I) with the past clamped (it is the condition, never sampled).
  MLP: a feed-forward regressor of the change from the same condition (mean squared error).
  GRU: a recurrent regressor over the whole history (state and action of every step).
All predict the standardised one-step change (``jebm.eval.trajectories``); each gives a
``step_fn`` for ``jebm.eval.trajectories.rollout``.

    cond, target = jebm.eval.trajectories.windows(states, actions, k, stats, use_actions=True)
    ebm = train_ebm(cond, target, config)
    predicted = rollout(ebm_rollout_fn(ebm, stats, config), None, window, actions, key)
"""

import dataclasses
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jebm import baselines, langevin, optim, train
from jebm.eval import trajectories as traj
from jebm.langevin import LangevinConfig
from jebm.models.dynamics import GRURegressor, MLPRegressor
from jebm.models.mlp import MLPEnergy


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
  """Settings shared by the three models (ValueError names a bad field).

  Attributes:
    context: k, the states each prediction sees (the GRU sees the whole history).
    use_actions: condition on the action taken (else the next state is predicted from the past
      states alone, a stochastic target under the random policy).
    hidden_sizes: widths of the EBM's hidden layers (and the MLP's, unless ``train_mlp`` is given
      a parameter count to match).
    gru_hidden: the GRU's hidden size (unless ``train_gru`` is given a parameter count to match).
    num_steps, batch_size, learning_rate: Adam training of every model (cosine decay for the
      regressors; constant for the EBM, as jebm's presets); batch_size counts windows.
    gru_batch_size: the GRU's batch, in whole trajectories (each holds ~100 windows).
    langevin: the EBM's training chains (in standardised units).
    l2_coeff: the EBM's energy penalty.
    predict_steps, predict_noise, predict_chains: the EBM's prediction chains (the training
      sampler's step size; their own length and noise; the lowest-energy chain is kept).
  """

  context: int = 4
  use_actions: bool = True
  hidden_sizes: Tuple[int, ...] = (256, 256, 256)
  gru_hidden: int = 256
  num_steps: int = 4000
  batch_size: int = 256
  learning_rate: float = 1e-3
  gru_batch_size: int = 32
  langevin: LangevinConfig = LangevinConfig(
    num_steps=30, step_size=0.05, noise_scale=0.01, grad_clip=None, x_min=-10.0, x_max=10.0
  )
  l2_coeff: float = 0.01
  predict_steps: int = 100
  predict_noise: float = 0.0
  predict_chains: int = 8

  def __post_init__(self):
    positive = (
      "context",
      "gru_hidden",
      "num_steps",
      "batch_size",
      "gru_batch_size",
      "predict_chains",
    )
    for name in positive:
      if getattr(self, name) < 1:
        raise ValueError(f"DynamicsConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.predict_steps < 0 or self.predict_noise < 0:
      raise ValueError("DynamicsConfig.predict_steps and predict_noise must be >= 0")


class Trained(NamedTuple):
  """A trained model: the flax module, its variables (EBM: the TrainState) and the losses."""

  model: object
  params: object
  losses: jax.Array


def _batches(num: int, config: DynamicsConfig, seed: int) -> jax.Array:
  return jax.random.randint(jax.random.key(seed), (config.num_steps, config.batch_size), 0, num)


def train_ebm(cond, target, config: DynamicsConfig, seed: int = 0) -> Trained:
  """The EBM E(target [D] | cond [C]) by contrastive divergence (``jebm.train``), every step in
  one ``lax.scan``; ``losses`` are the CD losses [num_steps]."""
  cond, target = jnp.asarray(cond, jnp.float32), jnp.asarray(target, jnp.float32)
  model = MLPEnergy(hidden_sizes=config.hidden_sizes, num_classes=cond.shape[1])
  optimizer = optim.igebm_adam(config.learning_rate)
  settings = train.TrainConfig(
    langevin=config.langevin,
    l2_coeff=config.l2_coeff,
    buffer_dtype="float32",
    init_low=-3.0,
    init_high=3.0,
    conditional=True,
    label_shape=(cond.shape[1],),
    label_dtype="float32",
    negative_labels="batch",
  )
  init_key = jax.random.key(seed)
  state = train.create_train_state(init_key, model, optimizer, settings, (target.shape[1],))
  step = train.make_train_step(model, optimizer, settings)

  def body(state, idx):
    state, metrics = step(state, {"image": target[idx], "label": cond[idx]})
    return state, metrics["loss"]

  state, losses = jax.jit(lambda s: jax.lax.scan(body, s, _batches(len(cond), config, seed + 1)))(
    state
  )
  return Trained(model, state, losses)


def ebm_predict(ebm: Trained, cond, key, config: DynamicsConfig, start=None, box=None):
  """The EBM's prediction [B, D] for conditions cond [B, C]: ``predict_chains`` chains per
  example from N(0, I) (the first from ``start`` [B, D] if given), ``predict_steps`` Langevin
  steps (kept inside ``box`` = (low [D], high [D]) if given), the lowest-energy chain kept."""
  b, p = cond.shape[0], config.predict_chains
  energy = lambda x, y: ebm.model.apply(ebm.params.variables(), x, y)
  y = jnp.repeat(cond, p, axis=0)
  init_key, chain_key = jax.random.split(key)
  dim = ebm.params.replay.images.shape[-1]
  x0 = jax.random.normal(init_key, (b, p, dim))
  if start is not None:
    x0 = x0.at[:, 0].set(start)
  x0 = x0.reshape(b * p, dim)
  sampler = dataclasses.replace(
    config.langevin, num_steps=config.predict_steps, noise_scale=config.predict_noise
  )
  x, _ = langevin.sample(chain_key, energy, x0, sampler, y=y, box=box)
  best = jnp.argmin(energy(x, y).reshape(b, p), axis=1)
  return x.reshape(b, p, dim)[jnp.arange(b), best]


def ebm_rollout_fn(ebm: Trained, stats, config: DynamicsConfig) -> traj.StepFn:
  """The EBM's ``step_fn`` for ``rollout`` (carry unused). With a context of two states or more,
  one chain starts at the window's last change (motion is smooth), the rest from noise. Chains
  stay within the range of the training data's changes, as the paper's image chains stay within
  the pixel range."""

  def step_fn(carry, window, action, key):
    cond = traj.condition(window, action, stats, config.use_actions)
    start = None
    if window.shape[1] > 1:
      start = traj.standardised_change(window[:, -1] - window[:, -2], stats)
    box = (stats["change_low"], stats["change_high"])
    change = ebm_predict(ebm, cond, key, config, start, box)
    return carry, traj.next_state(window[:, -1], change, stats)

  return step_fn


def _fit_regressor(model, inputs, targets, config, seed: int, batch_size: int) -> Trained:
  """``model`` fitted to map inputs [N, ..., F] to targets [N, ..., D] by mean squared error
  (``jebm.baselines.fit``: Adam, minibatches of ``batch_size`` along N)."""
  f = inputs.shape[-1]

  def loss(params, batch, key):
    del key
    return jnp.mean((model.apply({"params": params}, batch[..., :f]) - batch[..., f:]) ** 2)

  init_key, fit_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key, inputs[:1])["params"]
  settings = baselines.BaselineConfig(config.num_steps, batch_size, config.learning_rate)
  data = jnp.concatenate([inputs, jnp.asarray(targets, jnp.float32)], -1)
  params, losses = baselines.fit(loss, params, data, settings, fit_key)
  return Trained(model, params, losses)


def _width_for(num_params: int, build, example) -> int:
  """The width w in [1, 4096] whose model ``build(w)`` has the number of parameters closest to
  ``num_params`` (bisection: the count grows with w)."""
  count = lambda w: baselines.param_count(
    jax.eval_shape(build(w).init, jax.random.key(0), example)["params"]
  )
  low, high = 1, 4096
  while high - low > 1:
    mid = (low + high) // 2
    low, high = (mid, high) if count(mid) <= num_params else (low, mid)
  return min((low, high), key=lambda w: abs(count(w) - num_params))


def train_mlp(cond, target, config: DynamicsConfig, seed: int = 0, num_params=None) -> Trained:
  """The MLP regressor cond [N, C] -> target [N, D] by mean squared error (``jebm.baselines``);
  with ``num_params``, its layers' common width is chosen to have about that many parameters."""
  cond, target = jnp.asarray(cond, jnp.float32), jnp.asarray(target, jnp.float32)
  depth, out = len(config.hidden_sizes), target.shape[1]
  build = lambda width: MLPRegressor((width,) * depth, out)
  model = MLPRegressor(config.hidden_sizes, out)
  if num_params is not None:
    model = build(_width_for(num_params, build, cond[:1]))
  return _fit_regressor(model, cond, target, config, seed, config.batch_size)


def mlp_rollout_fn(mlp: Trained, stats, config: DynamicsConfig) -> traj.StepFn:
  """The MLP's ``step_fn`` for ``rollout`` (carry unused)."""

  def step_fn(carry, window, action, key):
    del key
    cond = traj.condition(window, action, stats, config.use_actions)
    change = mlp.model.apply({"params": mlp.params}, cond)
    return carry, traj.next_state(window[:, -1], change, stats)

  return step_fn


def _gru_inputs(states, actions, stats, use_actions: bool) -> jax.Array:
  """[B, T, S (+ A)]: each step's standardised state (and scaled action)."""
  window = jnp.asarray(states)[:, :, None]  # every state as a window of one
  b, t = window.shape[:2]
  cond = traj.condition(
    window.reshape(b * t, 1, -1), jnp.asarray(actions).reshape(b * t, -1), stats, use_actions
  )
  return cond.reshape(b, t, -1)


def train_gru(states, actions, stats, config: DynamicsConfig, seed=0, num_params=None) -> Trained:
  """The GRU regressor over whole training trajectories (states [N, T + 1, S], actions
  [N, T, A]), teacher-forced, by mean squared error of every step's change; with
  ``num_params``, its hidden size is chosen to have about that many parameters."""
  states, actions = np.asarray(states), np.asarray(actions)
  inputs = _gru_inputs(states[:, :-1], actions, stats, config.use_actions)
  targets = traj.standardised_change(np.diff(states, axis=1), stats)
  build = lambda width: GRURegressor(width, states.shape[-1])
  width = config.gru_hidden if num_params is None else _width_for(num_params, build, inputs[:1])
  return _fit_regressor(build(width), inputs, targets, config, seed, config.gru_batch_size)


def gru_rollout_fn(gru: Trained, stats, config: DynamicsConfig, states, actions):
  """(carry, step_fn) for ``rollout``: the GRU's state after reading the first k - 1 true
  transitions of states [B, >= k, S] / actions [B, >= k - 1, A]; its steps read the window's
  newest state and the action."""
  k = config.context
  apply = lambda *args, **kw: gru.model.apply({"params": gru.params}, *args, **kw)
  carry = apply(states.shape[0], method=GRURegressor.initial_carry)
  if k > 1:  # with a context of one state there is no transition to read
    warm = _gru_inputs(states[:, : k - 1], actions[:, : k - 1], stats, config.use_actions)
    for t in range(k - 1):
      carry, _ = apply(carry, warm[:, t], method=GRURegressor.step)

  def step_fn(carry, window, action, key):
    del key
    x = _gru_inputs(window[:, -1:], action[:, None], stats, config.use_actions)[:, 0]
    carry, change = apply(carry, x, method=GRURegressor.step)
    return carry, traj.next_state(window[:, -1], change, stats)

  return carry, step_fn


def param_count(trained: Trained) -> int:
  """Number of trained parameters (the EBM's from its TrainState)."""
  params = trained.params.params if isinstance(trained.params, train.TrainState) else trained.params
  return baselines.param_count(params)
