"""The description of a run: one flat, JSON-serialisable record, and how to build its parts.

A checkpoint stores this record beside the train state, so a checkpoint alone rebuilds the model,
the optimiser and the sampler settings (``jebm.checkpoint.restore``). Launchers turn every field
into a command-line flag.
"""

import dataclasses
import json
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import optax

from jebm import models, optim, train
from jebm.langevin import LangevinConfig


@dataclasses.dataclass(frozen=True)
class Config:
  """Every setting of a training run (see the presets in ``experiments/configs``).

  The defaults are the ``default`` preset: a conditional EBM on 8x8 digits for a 2-core CPU.

  Data: dataset (a ``jebm.data`` name), example_shape (filled in from the data), num_classes
  (0 = unconditional; > 0: the energy is conditioned on class ids).
  Model: model (a ``jebm.models.MODELS`` name), features (conv widths; MLP hidden sizes; unused
  by the ResNet presets), activation, spectral_norm.
  Sampler: langevin_steps, step_size, noise_scale, grad_clip (0 = none), clip_mode, x_min, x_max.
  Conditional training (unused when num_classes = 0): negative_labels (the condition of each
  negative chain: "batch", "buffer" or "uniform", see ``jebm.train.TrainConfig``), ce_coeff
  (weight of the optional cross-entropy term on -E(x, .) / ce_temperature; 0 = the paper's
  objective), ce_fraction (of each batch it is computed on). The default is replayed chains
  under their stored labels plus a tempered cross-entropy term, chosen by measurement: see
  ``experiments/configs/presets.py``.
  Objective and optimiser: objective ("cd": the EBM, contrastive divergence; "softmax": the same
  network trained only as a classifier of softmax(-E(x, .) / ce_temperature), the supervised
  baseline), l2_coeff, kl_coeff, kl_steps, learning_rate, warmup_steps (linear
  warm-up from 0), lr_schedule ("constant", or "cosine": decay to 0 at num_steps), b1, b2.
  Replay: buffer_capacity, reinit_prob, init_low, init_high (fresh chains ~ U[init_low, init_high)).
  Run: batch_size (global), num_steps, seed, checkpoint_every, keep_checkpoints, log_every,
  sample_every, max_energy (divergence guard: stop when |mean energy| exceeds it),
  time_limit_minutes (stop early, with a checkpoint, after this much wall time; 0 = no limit).
  Evaluation: eval_langevin_steps (chain length when sampling from noise), eval_num_samples.
  """

  dataset: str = "digits"
  example_shape: Tuple[int, ...] = ()
  num_classes: int = 10
  model: str = "conv"
  features: Tuple[int, ...] = (32, 64)
  activation: str = "swish"
  spectral_norm: bool = False
  langevin_steps: int = 20
  step_size: float = 10.0
  noise_scale: float = 0.005
  grad_clip: float = 0.01
  clip_mode: str = "elementwise"
  x_min: float = 0.0
  x_max: float = 1.0
  negative_labels: str = "buffer"
  ce_coeff: float = 0.1
  ce_temperature: float = 0.01
  ce_fraction: float = 0.25
  objective: str = "cd"
  l2_coeff: float = 1.0
  kl_coeff: float = 0.0
  kl_steps: int = 1
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  lr_schedule: str = "cosine"
  b1: float = 0.0
  b2: float = 0.999
  buffer_capacity: int = 10000
  reinit_prob: float = 0.05
  init_low: float = 0.0
  init_high: float = 1.0
  batch_size: int = 128
  num_steps: int = 2000
  seed: int = 0
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  log_every: int = 100
  sample_every: int = 500
  max_energy: float = 1e4
  time_limit_minutes: float = 0.0
  eval_langevin_steps: int = 200
  eval_num_samples: int = 1000

  @property
  def conditional(self) -> bool:
    return self.num_classes > 0

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "Config":
    """Builds a Config from a dict (e.g. parsed JSON); unknown keys raise ValueError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
      raise ValueError(f"unknown config fields: {unknown}")
    tuples = {k: tuple(v) for k, v in values.items() if isinstance(fields[k].default, tuple)}
    return cls(**{**values, **tuples})


# Fields that may change when a run is resumed: they do not change what the state means.
RESUMABLE_FIELDS = (
  "num_steps",
  "checkpoint_every",
  "keep_checkpoints",
  "log_every",
  "sample_every",
  "max_energy",
  "time_limit_minutes",
  "eval_langevin_steps",
  "eval_num_samples",
)


def mismatched_fields(saved: Config, current: Config) -> Dict[str, Tuple[Any, Any]]:
  """Fields (other than RESUMABLE_FIELDS) whose values differ: {name: (saved, current)}.

  num_steps counts too when the learning rate decays towards it.
  """
  resumable = set(RESUMABLE_FIELDS)
  if saved.lr_schedule != "constant":
    resumable.discard("num_steps")
  a, b = dataclasses.asdict(saved), dataclasses.asdict(current)
  return {k: (a[k], b[k]) for k in a if k not in resumable and a[k] != b[k]}


def build_model(config: Config) -> nn.Module:
  """The energy network named by ``config.model``."""
  num_classes = config.num_classes or None
  kwargs = dict(
    num_classes=num_classes, activation=config.activation, spectral_norm=config.spectral_norm
  )
  if config.model == "conv":
    kwargs["features"] = config.features
  elif config.model == "mlp":
    kwargs["hidden_sizes"] = config.features
  return models.get_model(config.model, **kwargs)


def learning_rate(config: Config) -> optax.Schedule:
  """Learning rate per step: linear warm-up over warmup_steps, then constant or cosine decay."""
  warmup = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  if config.lr_schedule == "constant":
    after = optax.constant_schedule(config.learning_rate)
  elif config.lr_schedule == "cosine":
    after = optax.cosine_decay_schedule(
      config.learning_rate, max(config.num_steps - config.warmup_steps, 1)
    )
  else:
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
  return optax.join_schedules([warmup, after], [config.warmup_steps])


def build_optimizer(config: Config) -> optax.GradientTransformation:
  """The IGEBM optimiser with the learning rate of ``learning_rate(config)``."""
  return optim.igebm_adam(learning_rate(config), b1=config.b1, b2=config.b2)


def langevin_config(config: Config, num_steps: Optional[int] = None) -> LangevinConfig:
  """The sampler settings of the run (``num_steps`` overrides the chain length)."""
  return LangevinConfig(
    num_steps=config.langevin_steps if num_steps is None else num_steps,
    step_size=config.step_size,
    noise_scale=config.noise_scale,
    grad_clip=config.grad_clip or None,
    clip_mode=config.clip_mode,
    x_min=config.x_min,
    x_max=config.x_max,
  )


def train_config(config: Config) -> train.TrainConfig:
  """The training-step settings of the run; image data gets a uint8 replay buffer."""
  images = len(config.example_shape) == 3
  return train.TrainConfig(
    objective=config.objective,
    langevin=langevin_config(config),
    l2_coeff=config.l2_coeff,
    kl_coeff=config.kl_coeff,
    kl_steps=config.kl_steps,
    reinit_prob=config.reinit_prob,
    buffer_capacity=config.buffer_capacity,
    buffer_dtype="uint8" if images else "float32",
    init_low=config.init_low,
    init_high=config.init_high,
    conditional=config.conditional,
    negative_labels=config.negative_labels,
    num_classes=config.num_classes,
    ce_coeff=config.ce_coeff if config.conditional else 0.0,
    ce_temperature=config.ce_temperature,
    ce_fraction=config.ce_fraction,
  )


def create_state(config: Config) -> train.TrainState:
  """A fresh train state for ``config`` (seeded by ``config.seed``)."""
  if not config.example_shape:
    raise ValueError(
      "Config.example_shape is empty: set it from the data before building the state"
    )
  return train.create_train_state(
    jax.random.key(config.seed),
    build_model(config),
    build_optimizer(config),
    train_config(config),
    config.example_shape,
  )
