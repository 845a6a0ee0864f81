"""TFDS builder ``jebm_trajectories``: simulated MuJoCo trajectories, one config per environment.

Configs: reacher, pusher (see `jebm.data.trajectories` for the simulation and its policies).
Records ``{"states": float32 [LENGTH + 1, S], "actions": float32 [LENGTH, A], "policy": int}``;
train = ``simulate(env, 1000, LENGTH, seed=0)``, test = ``simulate(env, 100, LENGTH, seed=1)``,
in simulation order. Preparing needs the ``mujoco`` extra and takes seconds.
"""

import numpy as np
import tensorflow_datasets as tfds

from jebm.data import trajectories
from jebm.data.builders.base import JebmBuilder

LENGTH = 110  # actions per trajectory: a context of up to 10 states and a 100-step rollout
SPLITS = {"train": (1000, 0), "test": (100, 1)}  # split -> (trajectories, seed)


class JebmTrajectories(JebmBuilder):
  """MuJoCo Reacher / Pusher trajectories as a TFDS dataset (ArrayRecord by default)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: train 1000 (seed 0), test 100 (seed 1), 110 steps."}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name=name, description=f"gymnasium {spec.gym_id}")
    for name, spec in trajectories.ENVS.items()
  ]

  def _info(self):
    spec = trajectories.ENVS[self.builder_config.name]
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__ + "\n" + trajectories.__doc__,
      features=tfds.features.FeaturesDict(
        {
          "states": tfds.features.Tensor(shape=(LENGTH + 1, spec.state_dim), dtype=np.float32),
          "actions": tfds.features.Tensor(shape=(LENGTH, spec.action_dim), dtype=np.float32),
          "policy": tfds.features.ClassLabel(names=trajectories.POLICIES),
        }
      ),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Simulated.
    trajectories.require_mujoco()  # fail before TFDS starts writing
    return {split: self._generate_examples(size, seed) for split, (size, seed) in SPLITS.items()}

  def _generate_examples(self, size, seed):
    data = trajectories.simulate(self.builder_config.name, size, LENGTH, seed)
    for i in range(size):
      yield i, {k: data[k][i] for k in ("states", "actions", "policy")}
