"""What an evaluation task is given: a restored model, where its data lives, where to write, and
the task options. ``experiments/evaluate.py`` builds one from its flags; a notebook can too."""

import dataclasses
import functools
import os
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from jebm import generate
from jebm.config import Config
from jebm.energy import EnergyFn
from jebm.train import TrainState

if TYPE_CHECKING:
  from jebm.eval.likelihood import LikelihoodConfig
  from jebm.eval.restore import RestoreConfig
  from jebm.eval.robustness import RobustnessConfig
  from jebm.eval.steps import StepsConfig


@dataclasses.dataclass
class EvalContext:
  """A checkpoint under evaluation and the options of the tasks.

  Attributes:
    state, config: the restored train state (replay buffer in logical order) and its Config.
    out_dir: where tasks write pictures (``<workdir>/eval``).
    seed: evaluation seed: every task's randomness derives from it.
    data_dir, manual_dir: where the dataset is (see ``jebm.data``).
    max_test: test examples used by the energy tasks; None = the whole split.
    num_samples: generated samples for sample_quality (None = config.eval_num_samples).
    langevin_steps: chain length from noise (None = config.eval_langevin_steps).
    init: chain starts for sample_quality, from ("replay", "noise").
    feature_fn: optional "module:function" feature network for FID/KID.
    ood_sets: OOD sets, names or specs (see ``jebm.eval.ood.load_ood_set``); () = the synthetic
      sets.
    robustness: settings of the robustness task (None = ``RobustnessConfig()``).
    softmax_workdir: the robustness task's softmax baseline checkpoint (None = no such curve).
    restore: settings of the restore task (None = ``RestoreConfig()``).
    steps: settings of the steps task (None = ``StepsConfig()``).
    likelihood: settings of the likelihood task (None = ``LikelihoodConfig()``).
    ensemble: {checkpoint step: variables} of earlier checkpoints whose energies take turns with
      the state's in sample_quality's chains (``jebm.generate.historical_ensemble``); {} = none.
  """

  state: TrainState
  config: Config
  out_dir: str
  seed: int = 0
  data_dir: Optional[str] = None
  manual_dir: Optional[str] = None
  max_test: Optional[int] = None
  num_samples: Optional[int] = None
  langevin_steps: Optional[int] = None
  init: Tuple[str, ...] = ("replay", "noise")
  feature_fn: Optional[str] = None
  ood_sets: Tuple[str, ...] = ()
  robustness: Optional["RobustnessConfig"] = None
  softmax_workdir: Optional[str] = None
  restore: Optional["RestoreConfig"] = None
  steps: Optional["StepsConfig"] = None
  likelihood: Optional["LikelihoodConfig"] = None
  ensemble: Dict[int, Any] = dataclasses.field(default_factory=dict)
  _cache: Dict[str, object] = dataclasses.field(default_factory=dict, repr=False)

  @functools.cached_property
  def energy_fn(self) -> EnergyFn:
    """The model's energy ``E(x [B, ...], y [B] or None) -> [B]``."""
    return generate.energy_fn(self.state, self.config)

  @property
  def num_classes(self) -> Optional[int]:
    """K for a conditional model, None for an unconditional one."""
    return self.config.num_classes or None

  def split(self, name: str, limit: Optional[int] = None) -> dict:
    """A split of the model's dataset, read once: ``{"image": float32 [N, ...] in [0, 1] for
    images, "label": int32 [N]}``, the first ``limit`` examples (None = all)."""
    if name not in self._cache:
      from jebm import data  # TFDS is imported only when data is needed.

      arrays = data.arrays(
        self.config.dataset, name, data_dir=self.data_dir, manual_dir=self.manual_dir
      )
      if arrays["image"].dtype == np.uint8:
        arrays["image"] = arrays["image"].astype(np.float32) / 255.0
      self._cache[name] = arrays
    return {k: v[:limit] for k, v in self._cache[name].items()}

  def test_split(self) -> dict:
    """The test split, cut to ``max_test`` examples."""
    return self.split("test", self.max_test)

  @property
  def has_judge(self) -> bool:
    """Whether the dataset has labelled images, so that a judge classifier can be trained."""
    return len(self.config.example_shape) == 3 and "label" in self.split("test", 1)

  def judge(self):
    """(judge, its test accuracy): the dataset's judge classifier (``jebm.eval.judge_cache``),
    trained on first use and cached in the data dir."""
    if "judge" not in self._cache:
      from jebm.eval.judge_cache import load_or_train_judge

      self._cache["judge"] = load_or_train_judge(
        self.config.dataset, data_dir=self.data_dir, manual_dir=self.manual_dir
      )
    return self._cache["judge"]

  def path(self, filename: str) -> str:
    """``out_dir/filename``."""
    return os.path.join(self.out_dir, filename)
