"""Trajectories of MuJoCo's Reacher and Pusher (gymnasium), simulated from a seed: the data of the
trajectory EBMs (``experiments/trajectories.py``).

MuJoCo comes with the optional extra (``pip install -e ".[mujoco]"``); nothing else in jebm needs
it, and `require_mujoco` fails fast with that command when it is missing.

Each trajectory starts from the environment's own random reset (``reset(seed=...)``: Reacher
draws its arm pose and target, Pusher its object and goal) and follows one policy:
  "random": actions uniform in the action box, independently every step;
  "reach":  a Jacobian-transpose controller that pulls the fingertip (Reacher) to the target, or
            the arm's tip (Pusher) behind the object and then through it (`_aim`), so that
            contacts move the object (by 0 to 9 cm in an episode):
            a = clip(gain * J^T (aim - tip) - damping * qdot + noise), noise N(0, (0.3 * box)^2).
Trajectories alternate between the two policies (even index: random, odd: reach). A state is the
whole model's (qpos, qvel), recorded before each action, so the target / object / goal positions
are part of it. MuJoCo is deterministic: `resimulate` from the first state and the actions
gives the stored states back.
"""

from typing import Dict, NamedTuple

import numpy as np

INSTALL_COMMAND = 'pip install -e ".[mujoco]"'
POLICIES = ("random", "reach")


class EnvSpec(NamedTuple):
  """gymnasium id; the bodies of the tip and its goal; sizes of state and action; controller."""

  gym_id: str
  tip_body: str
  goal_body: str
  state_dim: int
  action_dim: int
  gain: float
  damping: float


ENVS = {
  "reacher": EnvSpec("Reacher-v5", "fingertip", "target", 8, 2, 40.0, 0.5),
  "pusher": EnvSpec("Pusher-v5", "tips_arm", "object", 22, 7, 20.0, 0.5),
}


def require_mujoco():
  """(gymnasium, mujoco) modules; ImportError with the install command when the extra is missing."""
  try:
    import gymnasium
    import mujoco
  except ImportError as e:
    raise ImportError(
      f"the trajectory experiments need MuJoCo, an optional extra of jebm ({e}); install it with"
      f"  {INSTALL_COMMAND}"
    ) from None
  return gymnasium, mujoco


def check_env(name: str) -> EnvSpec:
  """The `EnvSpec` of ``name``; ValueError listing `ENVS` otherwise."""
  if name not in ENVS:
    raise ValueError(f"unknown environment {name!r}; known: {sorted(ENVS)}")
  return ENVS[name]


def _make(name: str):
  gymnasium, _ = require_mujoco()
  return gymnasium.make(check_env(name).gym_id).unwrapped  # no time limit: our own lengths


def _state(env) -> np.ndarray:
  return np.concatenate([env.data.qpos, env.data.qvel]).astype(np.float32)


def _aim(env, spec: EnvSpec) -> np.ndarray:
  """Where the controller pulls the tip: Reacher's target; for Pusher a point 7 cm behind the
  object (seen from the goal), then, once the tip is within 3 cm of it, 10 cm past the object
  towards the goal (it pushes the object along)."""
  data = env.data
  goal = data.body(spec.goal_body).xpos.copy()
  if spec.goal_body != "object":
    return goal
  obj, target = data.body("object").xpos.copy(), data.body("goal").xpos.copy()
  towards = (target - obj)[:2] / max(np.linalg.norm((target - obj)[:2]), 1e-6)
  behind = obj.copy()
  behind[:2] -= 0.07 * towards
  if np.linalg.norm(data.body(spec.tip_body).xpos - behind) > 0.03:
    return behind
  past = obj.copy()
  past[:2] += 0.1 * towards
  return past


def _reach_action(env, spec: EnvSpec, rng: np.random.Generator) -> np.ndarray:
  """The noisy Jacobian-transpose action that moves the tip towards `_aim`."""
  _, mujoco = require_mujoco()
  model, data = env.model, env.data
  tip = model.body(spec.tip_body).id
  jacp = np.zeros((3, model.nv))
  mujoco.mj_jacBody(model, data, jacp, None, tip)
  dofs = model.jnt_dofadr[model.actuator_trnid[:, 0]]
  error = _aim(env, spec) - data.xpos[tip]
  low, high = env.action_space.low, env.action_space.high
  action = spec.gain * jacp[:, dofs].T @ error - spec.damping * data.qvel[dofs]
  action += rng.normal(0.0, 0.3 * (high - low) / 2)
  return np.clip(action, low, high)


def simulate(name: str, num: int, length: int, seed: int) -> Dict[str, np.ndarray]:
  """``num`` trajectories of ``length`` actions in environment ``name``, deterministic in seed.

  Returns:
    {"states": float32 [num, length + 1, S], "actions": float32 [num, length, A],
     "policy": int32 [num] (index into `POLICIES`)}.
  """
  spec = check_env(name)
  env = _make(name)
  states = np.zeros((num, length + 1, spec.state_dim), np.float32)
  actions = np.zeros((num, length, spec.action_dim), np.float32)
  policy = np.arange(num, dtype=np.int32) % len(POLICIES)
  for i in range(num):
    rng = np.random.default_rng([seed, i])
    env.reset(seed=int(rng.integers(2**31)))
    low, high = env.action_space.low, env.action_space.high
    for t in range(length):
      states[i, t] = _state(env)
      if POLICIES[policy[i]] == "random":
        actions[i, t] = rng.uniform(low, high)
      else:
        actions[i, t] = _reach_action(env, spec, rng)
      env.step(actions[i, t])
    states[i, length] = _state(env)
  env.close()
  return {"states": states, "actions": actions, "policy": policy}


def resimulate(name: str, first_state: np.ndarray, actions: np.ndarray) -> np.ndarray:
  """The states [T + 1, S] MuJoCo reaches from ``first_state`` [S] under ``actions`` [T, A]."""
  env = _make(name)
  env.reset(seed=0)
  nq = env.model.nq
  env.set_state(np.asarray(first_state[:nq], np.float64), np.asarray(first_state[nq:], np.float64))
  states = [_state(env)]
  for action in actions:
    env.step(np.asarray(action))
    states.append(_state(env))
  env.close()
  return np.stack(states)


def joint_limits(name: str) -> np.ndarray:
  """[nq, 2] (low, high) of each qpos entry: the joint range where the joint is limited, else
  (-inf, inf)."""
  env = _make(name)
  model = env.model
  limits = np.full((model.nq, 2), [-np.inf, np.inf])
  for j in range(model.njnt):
    if model.jnt_limited[j] and model.jnt_type[j] in (2, 3):  # slide or hinge: one qpos entry
      limits[model.jnt_qposadr[j]] = model.jnt_range[j]
  env.close()
  return limits
