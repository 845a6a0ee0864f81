"""The description of a run: one flat, JSON-serialisable record, and how to build its parts.

A checkpoint stores this record beside the train state, so a checkpoint alone rebuilds the model,
the optimiser and the sampler settings (``jebm.checkpoint.restore``). Launchers turn every field
into a command-line flag.
"""

import dataclasses
import json
import math
import numbers
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import optax

from jebm import models, optim, train
from jebm.data import dsprites
from jebm.data.checks import check_dataset_name
from jebm.langevin import CLIP_MODES, LangevinConfig

LR_SCHEDULES = ("constant", "cosine")
ON_DIVERGENCE = ("stop", "rollback")

# The version of the record ``config_to_dict`` writes (key "config_version"). Adding, removing or
# changing the meaning of a field bumps it and adds a migration to ``_MIGRATIONS`` that fills the
# new fields with the values reproducing how runs of the older version behaved.
CONFIG_VERSION = 4
VERSION_KEY = "config_version"

# Version 0: configs written before versions existed (no "config_version" key). Fields added
# after the first checkpoints, with the value that reproduces what a run without them did (git
# log -p -- jebm/config.py): not today's defaults, which would silently change an old run.
VERSION_0_VALUES = {
  "time_limit_minutes": 0.0,  # e1fd684: no time limit
  "lr_schedule": "constant",  # 0fc33f2: the learning rate stayed constant after the warm-up
  # c526595: replayed chains kept the label they were stored with (the field's first default,
  # "batch", was a change of behaviour; its first CE term was off)
  "negative_labels": "buffer",
  "ce_coeff": 0.0,
  "ce_temperature": 1.0,
  "ce_fraction": 1.0,  # 1774519: the CE term, when on, used the whole batch
  "objective": "cd",  # 36bcd9c: every run was an EBM
  "on_divergence": "stop",  # a divergence ended the run; no rollbacks
  "max_rollbacks": 0,
  "rollbacks": 0,
}


# Version 1 -> 2: ema_decay added; 0 = no average, what version-1 runs did.
VERSION_1_VALUES = {"ema_decay": 0.0}

# Version 2 -> 3: augment added; version-2 runs trained on the images as they are.
VERSION_2_VALUES = {"augment": "none"}

# Version 3 -> 4: condition added; version-3 conditional runs were conditioned on class ids.
VERSION_3_VALUES = {"condition": "label"}

# What a model may be conditioned on: class ids ("label"), or a dSprites factor as a float vector
# (``jebm.data.dsprites.CONDITIONS``: its width is the model's num_classes).
CONDITIONS = ("label",) + tuple(dsprites.CONDITIONS)


class ConfigVersionError(ValueError):
  """A config record of a version this jebm cannot read (newer than ``CONFIG_VERSION``, or not a
  version at all): an intact file, not a damaged one."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Every setting of a training run (see the presets in ``experiments/configs``).

  The defaults are the ``default`` preset: a conditional EBM on 8x8 digits for a 2-core CPU.
  Every field is checked on construction (type, range, choices, fields that go together):
  ValueError names it as its flag, e.g. "--log_every must be an int >= 1, got 0".

  Data: dataset (a ``jebm.data`` name), example_shape (filled in from the data), num_classes
  (0 = unconditional; > 0: the energy is conditioned on class ids, or the width of a float
  condition vector), condition ("label": class ids; "position", "scale", "shape", "rotation":
  the dSprites factor of ``jebm.data.dsprites.CONDITIONS`` as a float vector, read from each
  record's latents; num_classes must be its width), augment ("none", or
  "crop_flip": every training image randomly cropped from its 4-pixel zero padding and flipped
  left-right with probability 1/2, on the device).
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
  warm-up from 0), lr_schedule ("constant", or "cosine": decay to 0 at num_steps), b1, b2,
  ema_decay (0 = off; else an exponential moving average of the parameters, kept in the
  optimiser state and used whenever the model is sampled or evaluated; training's own chains use
  the current parameters).
  Replay: buffer_capacity, reinit_prob, init_low, init_high (fresh chains ~ U[init_low, init_high)).
  Run: batch_size (global), num_steps, seed, checkpoint_every, keep_checkpoints, log_every,
  sample_every, max_energy (divergence guard: the loss is not finite or |mean energy| exceeds it),
  on_divergence ("stop": end the run with an error; "rollback": restore the newest checkpoint,
  halve the learning rate and go on), max_rollbacks (rollbacks allowed before stopping),
  rollbacks (rollbacks so far: set by the trainer, not a flag; the learning rate is
  learning_rate * 0.5 ** rollbacks),
  time_limit_minutes (stop early, with a checkpoint, after this much wall time; 0 = no limit).
  Evaluation: eval_langevin_steps (chain length when sampling from noise), eval_num_samples.
  """

  dataset: str = "digits"
  example_shape: Tuple[int, ...] = ()
  num_classes: int = 10
  condition: str = "label"
  augment: str = "none"
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
  ema_decay: float = 0.0
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
  on_divergence: str = "stop"
  max_rollbacks: int = 3
  rollbacks: int = 0
  time_limit_minutes: float = 0.0
  eval_langevin_steps: int = 200
  eval_num_samples: int = 1000

  def __post_init__(self):
    for name, value in _normalized_fields(self).items():
      object.__setattr__(self, name, value)
    _check_choices(self)
    _check_cross_fields(self)

  @property
  def conditional(self) -> bool:
    """Whether the energy takes a condition (class ids or float vectors)."""
    return self.num_classes > 0

  @property
  def class_conditional(self) -> bool:
    """Whether the energy is conditioned on class ids (what classifiers and per-class tasks
    need)."""
    return self.conditional and self.condition == "label"

  def to_json(self) -> str:
    """The record as JSON, with its ``config_version`` (what ``from_dict`` reads back)."""
    return json.dumps(config_to_dict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: Dict[str, Any], source: str = "the config") -> "Config":
    """Builds a Config from a dict written by ``config_to_dict`` (e.g. a checkpoint's JSON).

    A dict without "config_version" is version 0 (written before versions existed): the fields
    added since get the values that reproduce how such runs behaved (``VERSION_0_VALUES``), not
    today's defaults. Raises ConfigVersionError for a version newer than ``CONFIG_VERSION`` or
    not a version at all, ValueError for unknown or missing fields or a bad value; both name
    ``source`` (e.g. "checkpoint W/checkpoints/20").
    """
    values = dict(values)
    version = values.pop(VERSION_KEY, 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
      raise ConfigVersionError(
        f"{source}: config_version {version!r} is not a version (this jebm reads 0 to "
        f"{CONFIG_VERSION})"
      )
    if version > CONFIG_VERSION:
      raise ConfigVersionError(
        f"{source} has config_version {version}, newer than this jebm reads (0 to "
        f"{CONFIG_VERSION}): it was written by a newer jebm; upgrade jebm to read it"
      )
    for old in range(version, CONFIG_VERSION):
      values = _MIGRATIONS[old](values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(values) - set(fields)), sorted(set(fields) - set(values))
    if unknown or missing:
      raise ValueError(
        f"{source} (config_version {version}) does not match its version's fields: "
        f"unknown {unknown}, missing {missing}"
      )
    try:
      return cls(**values)  # JSON lists become tuples there
    except ValueError as e:
      raise ValueError(f"{source}: {e}") from e


def config_to_dict(config: Config) -> Dict[str, Any]:
  """The JSON-serialisable record of ``config`` with its ``"config_version"``: what checkpoints
  and ``config.json`` store, and ``Config.from_dict`` reads."""
  return {VERSION_KEY: CONFIG_VERSION, **dataclasses.asdict(config)}


def _from_version_0(values: Dict[str, Any]) -> Dict[str, Any]:
  """A version-0 dict as version 1: fields it lacks take their old behaviour's values."""
  return {**VERSION_0_VALUES, **values}


def _from_version_1(values: Dict[str, Any]) -> Dict[str, Any]:
  """A version-1 dict as version 2: no parameter average."""
  return {**VERSION_1_VALUES, **values}


def _from_version_2(values: Dict[str, Any]) -> Dict[str, Any]:
  """A version-2 dict as version 3: no augmentation."""
  return {**VERSION_2_VALUES, **values}


def _from_version_3(values: Dict[str, Any]) -> Dict[str, Any]:
  """A version-3 dict as version 4: conditioned on class ids (when conditional)."""
  return {**VERSION_3_VALUES, **values}


# _MIGRATIONS[v] turns a dict of version v into one of version v + 1.
_MIGRATIONS = {0: _from_version_0, 1: _from_version_1, 2: _from_version_2, 3: _from_version_3}


# --- Validation: every field on construction; messages name the flag as it is typed ----------

# Fields that are not flags (filled from the data; counted by the trainer).
_NOT_FLAGS = ("example_shape", "rollbacks")

# Int fields: (smallest, largest or None) allowed value.
_INT_RANGES = {
  "num_classes": (0, None),
  "langevin_steps": (1, None),
  "kl_steps": (1, None),
  "warmup_steps": (0, None),
  "buffer_capacity": (1, None),
  "batch_size": (1, None),
  "num_steps": (1, None),
  "seed": (0, 2**63 - 1),  # numpy's generators take no negative seeds; jax's take int64
  "checkpoint_every": (1, None),
  "keep_checkpoints": (1, None),
  "log_every": (1, None),
  "sample_every": (1, None),
  "max_rollbacks": (0, None),
  "rollbacks": (0, None),
  "eval_langevin_steps": (1, None),
  "eval_num_samples": (1, None),
}

# Float fields (finite): (low, high, brackets): "[" / "]" include the bound, "(" / ")" exclude
# it; None = unbounded on that side.
_FLOAT_RANGES = {
  "step_size": (0.0, None, "()"),
  "noise_scale": (0.0, None, "[)"),
  "grad_clip": (0.0, None, "[)"),
  "x_min": (None, None, "()"),
  "x_max": (None, None, "()"),
  "ce_coeff": (0.0, None, "[)"),
  "ce_temperature": (0.0, None, "()"),
  "ce_fraction": (0.0, 1.0, "(]"),
  "l2_coeff": (0.0, None, "[)"),
  "kl_coeff": (0.0, None, "[)"),
  "learning_rate": (0.0, None, "()"),
  "b1": (0.0, 1.0, "[)"),
  "b2": (0.0, 1.0, "[)"),
  "ema_decay": (0.0, 1.0, "[)"),
  "reinit_prob": (0.0, 1.0, "[]"),
  "init_low": (None, None, "()"),
  "init_high": (None, None, "()"),
  "max_energy": (0.0, None, "()"),
  "time_limit_minutes": (0.0, None, "[)"),
}

# String fields with a fixed set of values (dataset is checked by ``check_dataset_name``).
CHOICES = {
  "model": tuple(models.MODELS),
  "activation": tuple(models.ACTIVATIONS),
  "clip_mode": CLIP_MODES,
  "negative_labels": train.NEGATIVE_LABELS,
  "objective": train.OBJECTIVES,
  "lr_schedule": LR_SCHEDULES,
  "on_divergence": ON_DIVERGENCE,
  "augment": train.AUGMENTATIONS,
  "condition": CONDITIONS,
}


def _name(field: str) -> str:
  """How a message names a field: as its flag, --field, when it is one."""
  return f"Config.{field}" if field in _NOT_FLAGS else f"--{field}"


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _interval(low, high, brackets: str) -> str:
  """Words for an interval: "> 0", ">= 0", "in [0, 1)", or "" for the whole line."""
  if low is not None and high is not None:
    return f"in {brackets[0]}{low:g}, {high:g}{brackets[1]}"
  if low is not None:
    return f"{'>=' if brackets[0] == '[' else '>'} {low:g}"
  if high is not None:
    return f"{'<=' if brackets[1] == ']' else '<'} {high:g}"
  return ""


def _in_interval(value: float, low, high, brackets: str) -> bool:
  above = low is None or (value >= low if brackets[0] == "[" else value > low)
  below = high is None or (value <= high if brackets[1] == "]" else value < high)
  return above and below


def _normalized_fields(config: Config) -> Dict[str, Any]:
  """Every typed field checked (type and range) and in its plain Python type: ints as int,
  floats as float, shapes and widths as tuples of int. ValueError names the first bad one."""
  out = {}
  for field, (low, high) in _INT_RANGES.items():
    value = getattr(config, field)
    if not (_is_int(value) and value >= low and (high is None or value <= high)):
      bound = f">= {low}" if high is None else f"in [{low}, {high}]"
      raise ValueError(f"{_name(field)} must be an int {bound}, got {value!r}")
    out[field] = int(value)
  for field, (low, high, brackets) in _FLOAT_RANGES.items():
    value = getattr(config, field)
    if not (_is_real(value) and math.isfinite(value) and _in_interval(value, low, high, brackets)):
      where = _interval(low, high, brackets)
      raise ValueError(
        f"{_name(field)} must be a finite number{' ' + where if where else ''}, got {value!r}"
      )
    out[field] = float(value)
  for field, nonempty in (("example_shape", False), ("features", True)):
    value = getattr(config, field)
    if not (
      isinstance(value, (tuple, list))
      and all(_is_int(v) and v >= 1 for v in value)
      and (value or not nonempty)
    ):
      what = "a non-empty list" if nonempty else "a list"
      raise ValueError(f"{_name(field)} must be {what} of ints >= 1, got {value!r}")
    out[field] = tuple(int(v) for v in value)
  if not isinstance(config.spectral_norm, bool):
    raise ValueError(f"--spectral_norm must be a bool, got {config.spectral_norm!r}")
  return out


def _check_choices(config: Config) -> None:
  """ValueError for a string field outside its choices, or a dataset nothing can read."""
  for field, choices in CHOICES.items():
    value = getattr(config, field)
    if not isinstance(value, str) or value not in choices:
      raise ValueError(f"{_name(field)} must be one of {list(choices)}, got {value!r}")
  try:
    check_dataset_name(config.dataset)
  except ValueError as e:
    raise ValueError(f"--dataset: {e}") from None


def _check_cross_fields(config: Config) -> None:
  """ValueError for fields that are fine alone but not together."""
  for low, high in (("x_min", "x_max"), ("init_low", "init_high")):
    a, b = getattr(config, low), getattr(config, high)
    if not a < b:
      raise ValueError(f"--{low} must be < --{high}, got {low}={a}, {high}={b}")
  if config.buffer_capacity < config.batch_size:
    raise ValueError(
      f"--buffer_capacity must be >= --batch_size (every step stores a batch of chains), got "
      f"buffer_capacity={config.buffer_capacity}, batch_size={config.batch_size}"
    )
  if config.kl_coeff > 0 and not config.kl_steps < config.langevin_steps:
    raise ValueError(
      "--kl_steps must be < --langevin_steps when --kl_coeff > 0 (the KL term differentiates "
      f"through the chain's last kl_steps), got kl_steps={config.kl_steps}, "
      f"langevin_steps={config.langevin_steps}"
    )
  if config.condition != "label":
    _check_float_condition(config)
  if config.objective == "softmax" and not config.conditional:
    raise ValueError(
      "--objective=softmax trains a classifier: it needs --num_classes > 0, got "
      f"num_classes={config.num_classes}"
    )


def _check_float_condition(config: Config) -> None:
  """ValueError for a float-vector condition with settings that need class ids."""
  width = dsprites.CONDITIONS[config.condition]
  if config.num_classes != width:
    raise ValueError(
      f"--condition={config.condition} is a vector of {width}: set --num_classes={width}, got "
      f"num_classes={config.num_classes}"
    )
  for flag, bad in (
    ("negative_labels", config.negative_labels == "uniform"),
    ("ce_coeff", config.ce_coeff > 0),
    ("objective", config.objective != "cd"),
  ):
    if bad:
      raise ValueError(
        f"--{flag}={getattr(config, flag)} needs class ids, but --condition={config.condition} "
        "is a float vector: use --negative_labels=batch or buffer, --ce_coeff=0, --objective=cd"
      )


# Fields that may change when a run is resumed: they do not change what the state means.
RESUMABLE_FIELDS = (
  "num_steps",
  "checkpoint_every",
  "keep_checkpoints",
  "log_every",
  "sample_every",
  "max_energy",
  "on_divergence",
  "max_rollbacks",
  "rollbacks",
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
  """Learning rate per step: linear warm-up over warmup_steps, then constant or cosine decay;
  halved for every divergence rollback so far."""
  peak = config.learning_rate * 0.5**config.rollbacks
  warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
  if config.lr_schedule == "constant":
    after = optax.constant_schedule(peak)
  elif config.lr_schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, max(config.num_steps - config.warmup_steps, 1))
  else:
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
  return optax.join_schedules([warmup, after], [config.warmup_steps])


def build_optimizer(config: Config) -> optax.GradientTransformation:
  """The IGEBM optimiser with the learning rate of ``learning_rate(config)``, followed by the
  parameter average of ``optim.params_ema`` when ``config.ema_decay`` > 0."""
  optimizer = optim.igebm_adam(learning_rate(config), b1=config.b1, b2=config.b2)
  if config.ema_decay:
    optimizer = optax.chain(optimizer, optim.params_ema(config.ema_decay))
  return optimizer


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
    label_shape=() if config.condition == "label" else (config.num_classes,),
    label_dtype="int32" if config.condition == "label" else "float32",
    negative_labels=config.negative_labels,
    num_classes=config.num_classes,
    ce_coeff=config.ce_coeff if config.conditional else 0.0,
    ce_temperature=config.ce_temperature,
    ce_fraction=config.ce_fraction,
    augment=config.augment,
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
