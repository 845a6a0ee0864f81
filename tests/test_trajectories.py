"""Trajectory models: rollouts feed predictions back, a tiny EBM learns a linear system, the MuJoCo
data is deterministic and matches a re-simulation, and without the extra the commands fail fast."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import dynamics
from jebm.data import trajectories as sim
from jebm.eval import trajectories as traj

ROOT = Path(__file__).resolve().parents[1]
NEEDS_MUJOCO = "needs the mujoco extra (pip install -e '.[mujoco]'; test.sh installs it)"


def _require_mujoco():
  pytest.importorskip("mujoco", reason=NEEDS_MUJOCO)
  pytest.importorskip("gymnasium", reason=NEEDS_MUJOCO)


def test_rollout_feeds_back_its_own_predictions():
  """After the context only predictions are used: a model that adds 1 to the mean of its window
  gives a known sequence, whatever the true future would be."""
  window = jnp.array([[[0.0], [1.0], [2.0]]])  # [B=1, k=3, S=1]
  actions = jnp.zeros((1, 4, 1))

  def step_fn(carry, window, action, key):
    return carry + 1, window.mean(axis=1) + 1

  predicted = traj.rollout(step_fn, 0, window, actions, jax.random.key(0))
  want, states = [], [0.0, 1.0, 2.0]
  for _ in range(4):
    states.append(np.mean(states[-3:]) + 1)
    want.append(states[-1])
  np.testing.assert_allclose(predicted[0, :, 0], want, rtol=1e-6)


def _linear_system(num, length, seed):
  """s_{t+1} = 0.9 s_t + 0.5 a_t, a_t ~ U[-1, 1], s_0 ~ U[-1, 1]: states [N, T+1, 1], actions."""
  rng = np.random.default_rng(seed)
  actions = rng.uniform(-1, 1, (num, length, 1)).astype(np.float32)
  states = np.zeros((num, length + 1, 1), np.float32)
  states[:, 0] = rng.uniform(-1, 1, (num, 1))
  for t in range(length):
    states[:, t + 1] = 0.9 * states[:, t] + 0.5 * actions[:, t]
  return states, actions


def test_a_tiny_trajectory_ebm_learns_a_linear_system():
  """The stated bound: the EBM's 10-step rollout error (standardised RMSE, fed back) is below 0.1
  and below a fifth of the error of predicting no change."""
  states, actions = _linear_system(200, 30, seed=0)
  test_states, test_actions = _linear_system(32, 30, seed=1)
  config = dynamics.DynamicsConfig(
    context=2, hidden_sizes=(64, 64), num_steps=800, batch_size=128, predict_chains=4
  )
  stats = traj.fit_stats(states, actions)
  cond, target = traj.windows(states, actions, config.context, stats, config.use_actions)
  ebm = dynamics.train_ebm(cond, target, config, seed=0)
  k, horizon = config.context, 10
  truth = test_states[:, k : k + horizon]
  step_fn = dynamics.ebm_rollout_fn(ebm, stats, config)
  predicted = traj.rollout(
    step_fn, None, test_states[:, :k], test_actions[:, k - 1 : k - 1 + horizon], jax.random.key(1)
  )
  error = traj.rollout_errors(predicted, truth, stats)[:, -1].mean()
  no_change = traj.rollout_errors(np.repeat(test_states[:, k - 1 : k], horizon, 1), truth, stats)
  assert error < 0.1 and error < no_change[:, -1].mean() / 5, (error, no_change[:, -1].mean())


@pytest.mark.parametrize("context", [1, 3])
def test_the_gru_rolls_out_after_reading_the_context(context):
  """The GRU reads the context's k - 1 true transitions (none when k = 1) and then rolls out."""
  states, actions = _linear_system(8, 12, seed=0)
  config = dynamics.DynamicsConfig(context=context, num_steps=2, gru_hidden=8, gru_batch_size=4)
  stats = traj.fit_stats(states, actions)
  gru = dynamics.train_gru(states, actions, stats, config)
  carry, step_fn = dynamics.gru_rollout_fn(gru, stats, config, states, actions)
  horizon = 13 - context  # actions at states k - 1 .. 11
  predicted = traj.rollout(
    step_fn, carry, states[:, :context], actions[:, context - 1 :], jax.random.key(0)
  )
  assert predicted.shape == (8, horizon, states.shape[-1]) and np.isfinite(predicted).all()


def test_simulation_is_deterministic_and_matches_a_resimulation():
  _require_mujoco()
  for env in sim.ENVS:
    a, b = sim.simulate(env, 4, 30, seed=3), sim.simulate(env, 4, 30, seed=3)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["states"], sim.simulate(env, 4, 30, seed=4)["states"])
    assert list(a["policy"]) == [0, 1, 0, 1]
    assert a["states"].shape == (4, 31, sim.ENVS[env].state_dim)
    for i in range(4):
      again = sim.resimulate(env, a["states"][i, 0], a["actions"][i])
      np.testing.assert_allclose(again, a["states"][i], atol=1e-5)


@pytest.fixture(scope="module")
def reacher_data_dir(tmp_path_factory):
  """A data dir with ``trajectories/reacher`` prepared (shared by the tests that read it)."""
  _require_mujoco()
  from jebm import data

  data_dir = tmp_path_factory.mktemp("trajectories")
  data.load("trajectories/reacher", "test", data_dir=data_dir)
  return data_dir


def test_the_builder_stores_the_simulation(reacher_data_dir):
  from jebm import data
  from jebm.data.builders.trajectories import LENGTH

  test = data.source_to_arrays(
    data.load("trajectories/reacher", "test", data_dir=reacher_data_dir), ("states", "actions")
  )
  want = sim.simulate("reacher", 3, LENGTH, seed=1)  # the test split's seed
  np.testing.assert_array_equal(test["states"][:3], want["states"])
  np.testing.assert_array_equal(test["actions"][:3], want["actions"])


def _launch(args, data_dir, env=None):
  env = env or dict(os.environ, PYTHONPATH=str(ROOT), JEBM_DATA_DIR=str(data_dir))
  command = [sys.executable, "-m", "experiments.trajectories", *args]
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_launcher_writes_its_results(reacher_data_dir, tmp_path):
  tiny = ["--num_steps=30", "--num_train=20", "--num_test=4", "--predict_chains=2"]
  result = _launch(
    ["--env=reacher", f"--workdir={tmp_path}", "--predict_steps=5", *tiny], reacher_data_dir
  )
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / "trajectories.json").read_text())
  for model in ("ebm", "mlp", "rnn"):
    errors = results[model]["horizon_errors"]
    assert set(errors) == {"1", "10", "50", "100"} and all(np.isfinite(list(errors.values())))
    assert results[model]["params"] > 0
  assert results["truth"]["plausibility"]["in_joint_limits"] > 0.95  # the simulator keeps them
  for png in ("trajectories_errors.png", "trajectories_rollout.png"):
    assert (tmp_path / png).stat().st_size > 1000


BLOCK_MUJOCO = """
import sys
class _Missing:
  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] in ("mujoco", "gymnasium"):
      raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _Missing())
"""


def test_without_the_extra_the_commands_fail_fast_with_the_install_command(tmp_path):
  (tmp_path / "sitecustomize.py").write_text(BLOCK_MUJOCO)
  env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", JEBM_DATA_DIR=str(tmp_path))
  start = time.monotonic()
  result = _launch(["--env=pusher", f"--workdir={tmp_path / 'w'}"], tmp_path, env)
  assert result.returncode != 0 and sim.INSTALL_COMMAND in result.stderr
  assert "Traceback" not in result.stderr
  check = "from jebm import data; data.load('trajectories/reacher', 'train')"
  loaded = subprocess.run(
    [sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )
  assert loaded.returncode != 0 and sim.INSTALL_COMMAND in loaded.stderr
  assert time.monotonic() - start < 60
  assert not list(tmp_path.rglob("*.array_record*"))
