"""--on_divergence=rollback: a NaN injected at a chosen step sends training back to the newest
checkpoint with half the learning rate, at most max_rollbacks times; the count survives resume.
(The default, stop, is tested with the launchers in test_experiments.)"""

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import trainer
from experiments.configs import get_preset
from jebm import checkpoint
from jebm import config as config_lib

TINY = dict(
  features=(8, 16),
  langevin_steps=4,
  batch_size=32,
  buffer_capacity=256,
  log_every=5,
  sample_every=100,
  num_steps=12,
  checkpoint_every=5,
  on_divergence="rollback",
  lr_schedule="constant",  # so that num_steps may grow on resume
)
POISONED_STEP = 7


def poison_train_steps(monkeypatch, times):
  """The first ``times`` train steps the trainer builds turn params and loss into NaN at
  POISONED_STEP; the ones built after are clean."""
  real = trainer.train_lib.make_train_step
  built = []

  def factory(*args, **kwargs):
    step_fn = real(*args, **kwargs)
    built.append(step_fn)
    if len(built) > times:
      return step_fn

    def poisoned(state, batch):
      state, metrics = step_fn(state, batch)
      nan = jnp.where(state.step == POISONED_STEP, jnp.nan, 1.0)
      params = jax.tree.map(lambda p: p * nan, state.params)
      return state.replace(params=params), dict(metrics, loss=metrics["loss"] * nan)

    return poisoned

  monkeypatch.setattr(trainer.train_lib, "make_train_step", factory)
  return built


@pytest.fixture
def config():
  return dataclasses.replace(get_preset("default"), **TINY)


def test_rollback_restores_the_newest_checkpoint_with_half_the_learning_rate(
  tmp_path, monkeypatch, caplog, config
):
  poison_train_steps(monkeypatch, times=1)
  workdir = str(tmp_path / "w")
  with caplog.at_level(logging.WARNING):
    state = trainer.train_and_evaluate(config, workdir, data_dir=str(tmp_path / "data"))
  assert int(state.step) == config.num_steps
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state.params)))
  assert f"training diverged at step {POISONED_STEP}" in caplog.text
  assert "Rollback 1/3: back to step 5, learning rate halved" in caplog.text
  saved = checkpoint.load_config(workdir)
  assert saved.rollbacks == 1
  ratio = config_lib.learning_rate(saved)(50) / config_lib.learning_rate(config)(50)
  assert ratio == pytest.approx(0.5)

  # Resuming with the same flags (rollbacks 0) keeps the run's count and learning rate.
  more = dataclasses.replace(config, num_steps=config.num_steps + 3)
  trainer.train_and_evaluate(more, workdir, data_dir=str(tmp_path / "data"))
  assert checkpoint.load_config(workdir).rollbacks == 1


def test_rollbacks_are_bounded_and_the_diverged_state_is_never_saved(tmp_path, monkeypatch, config):
  poison_train_steps(monkeypatch, times=100)
  limited = dataclasses.replace(config, max_rollbacks=1)
  with pytest.raises(trainer.DivergenceError, match="Gave up after 1 rollbacks"):
    trainer.train_and_evaluate(limited, str(tmp_path / "w"), data_dir=str(tmp_path / "data"))
  assert checkpoint.latest_step(str(tmp_path / "w")) == 5
