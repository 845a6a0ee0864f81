"""Trajectory models: data windows, rollouts that feed predictions back, and their scores.

Every model predicts the next state the same way: from a window of the last ``context`` states
[B, k, S] (and the action taken, when action-conditional) it gives the standardised change
``(s_{t+1} - s_t - mean) / std``. A rollout starts from the true first ``context`` states, then
feeds its own predictions back: after the context window no true state is used. Entries that
never change in the training data (Reacher's target, fixed in each episode) are carried over
unchanged by every model, and every model's changes are clipped to the range of the training
changes (a bound on the speed of anything physical).

    stats = fit_stats(train_states)
    cond, target = windows(states, actions, context, stats, use_actions=True)
    predicted = rollout(step_fn, carry, states[:, :k], actions[:, k - 1:k - 1 + H], key)
    errors = rollout_errors(predicted, states[:, k:k + H], stats)       # [B, H]
"""

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

HORIZONS = (1, 10, 50, 100)
_MIN_STD = 1e-3  # constant state entries (a fixed target) are standardised by 1, not by 0


def fit_stats(states: np.ndarray, actions: np.ndarray) -> Dict[str, np.ndarray]:
  """Standardisation of states, their one-step changes and actions from training trajectories.

  Args:
    states: [N, T + 1, S]; actions: [N, T, A].

  Returns:
    {"state_mean", "state_std", "delta_mean", "delta_std", "moving" (1 where the entry ever
    changes, else 0), "change_low", "change_high" (the standardised changes' range): [S]; "action_scale": [A]; "state_min",
    "state_max", "state_sq_mean": [S] (the training range and mean square, for `plausibility`)}; stds floored at 1e-3 -> 1.
  """
  flat = states.reshape(-1, states.shape[-1])
  deltas = np.diff(states, axis=1).reshape(-1, states.shape[-1])
  floor = lambda s: np.where(s < _MIN_STD, 1.0, s).astype(np.float32)
  delta_mean, delta_std = deltas.mean(0), deltas.std(0)
  standardised = (deltas - delta_mean) / floor(delta_std)
  return {
    "state_mean": flat.mean(0).astype(np.float32),
    "state_std": floor(flat.std(0)),
    "delta_mean": delta_mean.astype(np.float32),
    "delta_std": floor(delta_std),
    "moving": (delta_std > 0).astype(np.float32),
    "change_low": standardised.min(0).astype(np.float32),
    "change_high": standardised.max(0).astype(np.float32),
    "action_scale": np.maximum(np.abs(actions).reshape(-1, actions.shape[-1]).max(0), 1e-6),
    "state_min": flat.min(0),
    "state_max": flat.max(0),
    "state_sq_mean": np.mean(flat.astype(np.float64) ** 2, 0),
  }


def condition(window: jax.Array, action: jax.Array, stats, use_actions: bool) -> jax.Array:
  """The models' input [B, k * S (+ A)]: the standardised window [B, k, S], then the scaled
  action [B, A] if ``use_actions``."""
  parts = [((window - stats["state_mean"]) / stats["state_std"]).reshape(window.shape[0], -1)]
  if use_actions:
    parts.append(action / stats["action_scale"])
  return jnp.concatenate(parts, axis=-1)


def standardised_change(change, stats):
  """The models' target: a change s_{t+1} - s_t [..., S] standardised by the training changes."""
  return (change - stats["delta_mean"]) / stats["delta_std"]


def next_state(state: jax.Array, prediction: jax.Array, stats) -> jax.Array:
  """s_{t+1} [B, S] from s_t [B, S] and a standardised change [B, S], clipped to the range of
  the training changes (every model alike); entries that never move in training stay as they
  are."""
  change = jnp.clip(prediction, stats["change_low"], stats["change_high"])
  return state + (change * stats["delta_std"] + stats["delta_mean"]) * stats["moving"]


def windows(states, actions, context: int, stats, use_actions: bool) -> Tuple[jax.Array, jax.Array]:
  """Every (condition, target) pair of trajectories states [N, T + 1, S], actions [N, T, A].

  Returns:
    cond [N * (T + 1 - context), C] (`condition` of states t - k + 1..t and action t) and
    target [N * (T + 1 - context), S] (the standardised change s_{t+1} - s_t).
  """
  n, length, _ = actions.shape
  ts = np.arange(context - 1, length)
  window = np.stack([states[:, t - context + 1 : t + 1] for t in ts], 1)  # [N, W, k, S]
  change = states[:, ts + 1] - states[:, ts]
  cond = condition(
    jnp.asarray(window.reshape(-1, *window.shape[2:])),
    jnp.asarray(actions[:, ts].reshape(n * len(ts), -1)),
    stats,
    use_actions,
  )
  target = standardised_change(change.reshape(n * len(ts), -1), stats)
  return cond, jnp.asarray(target, jnp.float32)


StepFn = Callable[[object, jax.Array, jax.Array, jax.Array], Tuple[object, jax.Array]]


def rollout(step_fn: StepFn, carry, window: jax.Array, actions: jax.Array, key: jax.Array):
  """Predicts H states, each from the model's own previous predictions (one ``lax.scan``).

  Args:
    step_fn: ``(carry, window [B, k, S], action [B, A], key) -> (carry, next state [B, S])``.
    carry: the model's own state (a recurrent state, or None).
    window: the true first k states [B, k, S].
    actions: [B, H, A] the actions at states k - 1 .. k + H - 2.
    key: PRNG key; step h uses fold_in(key, h).

  Returns:
    predicted states [B, H, S] (for true states k .. k + H - 1).
  """

  def body(loop, inputs):
    carry, window = loop
    action, h = inputs
    carry, state = step_fn(carry, window, action, jax.random.fold_in(key, h))
    window = jnp.concatenate([window[:, 1:], state[:, None]], axis=1)
    return (carry, window), state

  steps = (jnp.swapaxes(actions, 0, 1), jnp.arange(actions.shape[1]))
  _, states = jax.lax.scan(body, (carry, window), steps)
  return jnp.swapaxes(states, 0, 1)


def rollout_errors(predicted, true, stats) -> np.ndarray:
  """[B, H] root-mean-square error over the standardised state entries at each step."""
  diff = (np.asarray(predicted) - np.asarray(true)) / stats["state_std"]
  return np.sqrt(np.mean(diff**2, axis=-1))


def summarize_errors(errors: np.ndarray, horizons=HORIZONS) -> Dict[str, Dict[str, float]]:
  """{"horizon_errors": {"1": mean, ...}, "horizon_errors_std": {...}} over trajectories, from
  errors [B, H] (horizon h is column h - 1)."""
  return {
    "horizon_errors": {str(h): float(errors[:, h - 1].mean()) for h in horizons},
    "horizon_errors_std": {str(h): float(errors[:, h - 1].std()) for h in horizons},
  }


def plausibility(predicted, limits: np.ndarray, stats) -> Dict[str, float]:
  """Physical plausibility of rollouts predicted [B, H, S] (a blurry mean can have low error and
  no physics):

    in_joint_limits: fraction of predicted states whose limited joints lie in their range
      (``limits`` [nq, 2], from ``jebm.data.trajectories.joint_limits``; 1% of the range slack);
    in_training_range: fraction whose every entry (positions and velocities) lies within the
      range seen in training, widened by 10% of it and 0.01: velocities that blow up leave it;
    kinetic_ratio: mean |qvel|^2 of the predictions over that of the training states (1 =
      typical; a rollout that gains energy from nowhere goes far above).
  """
  x = np.asarray(predicted)
  nq = limits.shape[0]
  slack = 0.01 * np.where(np.isfinite(limits[:, 1] - limits[:, 0]), limits[:, 1] - limits[:, 0], 0)
  q = x[..., :nq]
  inside = (q >= limits[:, 0] - slack) & (q <= limits[:, 1] + slack)
  width = stats["state_max"] - stats["state_min"]
  low, high = stats["state_min"] - 0.1 * width - 0.01, stats["state_max"] + 0.1 * width + 0.01
  in_range = (x >= low) & (x <= high)
  train_kinetic = np.sum(stats["state_sq_mean"][nq:])
  return {
    "in_joint_limits": float(inside.all(-1).mean()),
    "in_training_range": float(in_range.all(-1).mean()),
    "kinetic_ratio": float(np.mean(np.sum(x[..., nq:] ** 2, -1)) / train_kinetic),
  }
