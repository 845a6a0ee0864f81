"""The launchers end to end: train on 2 devices, kill and resume, restore for sampling and
evaluation, config mismatch and divergence errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jebm import checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = [
  "--preset=default",
  "--features=8,16",
  "--langevin_steps=4",
  "--batch_size=32",
  "--buffer_capacity=256",
  "--log_every=5",
  "--sample_every=20",
  "--eval_langevin_steps=5",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  env = dict(
    os.environ,
    JEBM_DATA_DIR=str(tmp_path_factory.mktemp("data")),
    PYTHONUNBUFFERED="1",
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    JAX_PLATFORMS="cpu",
  )
  return env


def launch(module, *args, env, check=True, timeout=300):
  result = subprocess.run(
    [sys.executable, "-m", f"experiments.{module}", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  if check and result.returncode != 0:
    raise AssertionError(f"{module} failed:\n{result.stderr[-3000:]}")
  return result


def params_of(workdir):
  state, _ = checkpoint.restore(str(workdir))
  return int(state.step), jax.tree.leaves(jax.device_get(state.params))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env):
  """A 20-step run of the tiny default preset on 2 emulated devices."""
  workdir = tmp_path_factory.mktemp("run") / "w"
  result = launch(
    "train", *TINY, f"--workdir={workdir}", "--num_steps=20", "--checkpoint_every=10", env=env
  )
  assert "step 20/20" in result.stderr
  return workdir


def test_train_writes_config_checkpoints_samples_and_summaries(trained):
  config = json.loads((trained / "config.json").read_text())
  assert config["example_shape"] == [8, 8, 1] and config["num_steps"] == 20
  assert sorted(os.listdir(trained / "checkpoints"))[-2:] == ["10", "20"]
  assert (trained / "samples" / "step_0000020.png").exists()
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(trained))


def test_killed_run_resumes_to_identical_parameters(tmp_path, env):
  args = [*TINY, "--num_steps=30", "--checkpoint_every=10"]
  launch("train", *args, f"--workdir={tmp_path / 'straight'}", env=env)

  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.train", *args, f"--workdir={killed}"],
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 240
  while not (killed / "checkpoints" / "10").exists() and proc.poll() is None:
    assert time.time() < deadline, "no checkpoint within 240 s"
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert checkpoint.latest_step(str(killed)) < 30, "the run finished before it could be killed"
  launch("train", *args, f"--workdir={killed}", env=env)  # the same command resumes

  (step_a, params_a), (step_b, params_b) = params_of(tmp_path / "straight"), params_of(killed)
  assert step_a == step_b == 30
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)


def test_config_mismatch_names_the_fields(trained, env):
  result = launch(
    "train",
    *TINY,
    f"--workdir={trained}",
    "--num_steps=25",
    "--l2_coeff=0.5",
    "--step_size=3",
    env=env,
    check=False,
  )
  assert result.returncode != 0
  assert "l2_coeff" in result.stderr and "step_size" in result.stderr
  assert "different config" in result.stderr


def test_divergence_guard_stops_the_run(tmp_path, env):
  result = launch(
    "train",
    *TINY,
    f"--workdir={tmp_path / 'w'}",
    "--num_steps=10",
    "--max_energy=1e-9",
    env=env,
    check=False,
  )
  assert result.returncode != 0
  assert "training diverged at step 1" in result.stderr


def test_sample_restores_the_checkpoint(trained, env, tmp_path):
  out = tmp_path / "s.npz"
  launch("sample", f"--workdir={trained}", "--num_samples=3", f"--out={out}", "--steps=5", env=env)
  with np.load(out) as f:
    assert f["images"].shape == (30, 8, 8, 1) and f["images"].dtype == np.uint8
    np.testing.assert_array_equal(f["labels"], np.repeat(np.arange(10), 3))
  assert out.with_suffix(".png").exists()
