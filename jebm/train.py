"""Contrastive-divergence training of an EBM with a replay buffer (IGEBM), as pure functions.

``make_train_step`` returns ``train_step(state, batch) -> (state, metrics)``, un-jitted: the caller
jits it, or wraps it with ``jebm.parallel.data_parallel`` to run one replica per device.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jebm import langevin, losses, replay
from jebm.data.pipeline import crop_flip, dequantize
from jebm.energy import class_energy_table, from_model
from jebm.langevin import LangevinConfig

NEGATIVE_LABELS = ("batch", "buffer", "uniform")
OBJECTIVES = ("cd", "softmax")
AUGMENTATIONS = ("none", "crop_flip")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How one training step samples and scores negatives.

  Attributes:
    objective: "cd": contrastive divergence with Langevin negatives (the EBM); "softmax": the same
      network trained only as a classifier, cross-entropy of softmax(-E(x, .) / ce_temperature)
      on the whole batch, no chains (the supervised baseline of the robustness evaluation).
    langevin: sampler settings for the negative chains.
    l2_coeff: weight of the L2 energy penalty.
    kl_coeff: weight of the KL-through-sampler term; 0 disables it (the paper's zero_kl mode).
    kl_steps: number of final sampler steps differentiated through for the KL term.
    reinit_prob: fraction of chains restarted from noise rather than the replay buffer.
    buffer_capacity: replay entries in all (split evenly across devices when data-parallel).
    buffer_dtype: "uint8" for images in [0, 1], "float32" for unbounded data.
    init_low, init_high: fresh chains start uniform in [init_low, init_high).
    conditional: whether the energy takes the batch's "label" as its condition.
    label_shape: shape of one condition: () for class ids, (C,) for vectors.
    label_dtype: "int32" for class ids, "float32" for condition vectors.
    negative_labels: the condition each negative chain is sampled, scored and stored under:
      "batch": the current batch's labels, for replayed and fresh chains alike (IGEBM: its buffer
        stores no labels). Replayed images of one class are pushed up under another label,
        which is what makes argmin_y E(x, y) a classifier; negatives have the positives' label
        counts.
      "buffer": a replayed chain keeps the label it was stored with; fresh chains take the
        batch's. Every negative pair is class-consistent, so nothing pushes E(x_a, b) above
        E(x_a, a) and per-class energy offsets drift freely: the classifier stays at chance unless
        ce_coeff > 0 supplies the discriminative signal (the digits and MNIST presets do that:
        class-consistent chains gave the most diverse samples).
      "uniform": uniformly random class ids in [0, num_classes) (class ids only).
    num_classes: K, for class-id conditions (needed by "uniform" and ce_coeff).
    ce_coeff: weight of an optional cross-entropy term on the data,
      -log softmax(-E(x+, .) / ce_temperature)[y+] (JEM's discriminative term); 0 = off, the
      paper's objective. Class ids only.
    ce_temperature: the energy scale of that term's softmax (JEM: 1). Below 1 it asks for a
      classification margin of a few ce_temperature at the model's own energy scale instead of
      energy gaps of several units.
    ce_fraction: the fraction of each batch the term is computed on (in (0, 1]; it costs K energy
      evaluations and their parameter gradients per example).
    augment: "none", or "crop_flip": the data batch randomly cropped from its 4-pixel zero
      padding and flipped left-right (``jebm.data.crop_flip``), images only.
  """

  objective: str = "cd"
  langevin: LangevinConfig = LangevinConfig()
  l2_coeff: float = 1.0
  kl_coeff: float = 0.0
  kl_steps: int = 1
  reinit_prob: float = 0.05
  buffer_capacity: int = 10000
  buffer_dtype: str = "uint8"
  init_low: float = 0.0
  init_high: float = 1.0
  conditional: bool = False
  label_shape: Tuple[int, ...] = ()
  label_dtype: str = "int32"
  negative_labels: str = "batch"
  num_classes: int = 0
  ce_coeff: float = 0.0
  ce_temperature: float = 1.0
  ce_fraction: float = 1.0
  augment: str = "none"

  def __post_init__(self):
    if self.augment not in AUGMENTATIONS:
      raise ValueError(f"TrainConfig.augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
    if not 0.0 <= self.reinit_prob <= 1.0:
      raise ValueError(f"TrainConfig.reinit_prob must be in [0, 1], got {self.reinit_prob}")
    if self.buffer_dtype not in ("uint8", "float32"):
      raise ValueError(
        f"TrainConfig.buffer_dtype must be 'uint8' or 'float32', got {self.buffer_dtype!r}"
      )
    if self.kl_coeff and not 1 <= self.kl_steps < self.langevin.num_steps:
      raise ValueError(
        f"TrainConfig.kl_steps must be in [1, langevin.num_steps), got {self.kl_steps}"
      )
    if self.l2_coeff < 0 or self.kl_coeff < 0 or self.ce_coeff < 0:
      raise ValueError("TrainConfig.l2_coeff, kl_coeff and ce_coeff must be ≥ 0")
    if not self.ce_temperature > 0:
      raise ValueError(f"TrainConfig.ce_temperature must be > 0, got {self.ce_temperature}")
    if not 0 < self.ce_fraction <= 1:
      raise ValueError(f"TrainConfig.ce_fraction must be in (0, 1], got {self.ce_fraction}")
    if self.negative_labels not in NEGATIVE_LABELS:
      raise ValueError(
        f"TrainConfig.negative_labels must be one of {NEGATIVE_LABELS}, "
        f"got {self.negative_labels!r}"
      )
    if self.objective not in OBJECTIVES:
      raise ValueError(f"TrainConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}")
    class_ids = self.label_shape == () and self.label_dtype == "int32" and self.num_classes > 0
    uses_ids = (
      (self.conditional and self.negative_labels == "uniform")
      or self.ce_coeff > 0
      or self.objective == "softmax"
    )
    if uses_ids and not (self.conditional and class_ids):
      raise ValueError(
        "TrainConfig: negative_labels='uniform', ce_coeff > 0 and objective='softmax' need a "
        "conditional model on "
        f"int class ids with num_classes > 0 (num_classes={self.num_classes}, "
        f"label_shape={self.label_shape}, label_dtype={self.label_dtype!r})"
      )


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue, as one pytree.

  step: int32 scalar; params: model parameters; model_state: the model's other variable
  collections (e.g. {"spectral": ...}, or {}); opt_state: optax state; replay: ReplayBuffer;
  rng: PRNG key (step keys are fold_in(rng, step)).
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  replay: replay.ReplayBuffer
  rng: jax.Array

  def variables(self, params=None) -> Dict[str, Any]:
    """The model's variables dict, optionally with other params."""
    return {"params": self.params if params is None else params, **self.model_state}


def _example_labels(config: TrainConfig, batch_size: int):
  if not config.conditional:
    return None
  return jnp.zeros((batch_size, *config.label_shape), config.label_dtype)


def create_train_state(
  rng_key: jax.Array,
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  config: TrainConfig,
  example_shape: Tuple[int, ...],
) -> TrainState:
  """Initialises parameters, optimiser state and an empty replay buffer.

  Args:
    rng_key: PRNG key; split into the parameter init key and the state's own key.
    model: a jebm energy module, ``model.apply(variables, x, y) -> [B]``.
    optimizer: an optax transformation, e.g. ``jebm.optim.igebm_adam()``.
    config: TrainConfig.
    example_shape: shape of one data example, e.g. (28, 28, 1).
  """
  init_key, state_key = jax.random.split(rng_key)
  x = jnp.zeros((1, *example_shape), jnp.float32)
  variables = dict(model.init(init_key, x, _example_labels(config, 1)))
  params = variables.pop("params")
  buffer = replay.init(
    config.buffer_capacity,
    example_shape,
    config.label_shape,
    dtype=jnp.dtype(config.buffer_dtype),
    label_dtype=jnp.dtype(config.label_dtype),
  )
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    model_state=variables,
    opt_state=optimizer.init(params),
    replay=buffer,
    rng=state_key,
  )


def positive_examples(rng_key: jax.Array, images: jax.Array, augment: str = "none") -> jax.Array:
  """Data batch [B, ...] -> float32 model inputs [B, ...]: uint8 images get the paper's uniform
  dequantisation (``jebm.data.dequantize``), in [0, 1]; float data passes through. With
  ``augment="crop_flip"``, images [B, H, W, C] are then cropped and flipped (``crop_flip``)."""
  x = dequantize(rng_key, images) if images.dtype == jnp.uint8 else images.astype(jnp.float32)
  if augment == "none":
    return x
  if x.ndim != 4:
    raise ValueError(f"augment={augment!r} needs images [B, H, W, C], got shape {x.shape}")
  return crop_flip(jax.random.fold_in(rng_key, 1), x)


def _update_model_state(model, state: TrainState, x, y):
  """One power-iteration step of spectral normalisation (or nothing without model state)."""
  if not state.model_state:
    return state.model_state
  _, updated = model.apply(
    state.variables(),
    x[:1],
    None if y is None else y[:1],
    update_stats=True,
    mutable=list(state.model_state),
  )
  return dict(updated)


def negative_labels(
  rng_key: jax.Array, config: TrainConfig, batch_labels: jax.Array, stored_labels: jax.Array
) -> Optional[jax.Array]:
  """The conditions of the negative chains under ``config.negative_labels`` (None if
  unconditional).

  Args:
    rng_key: PRNG key (used by "uniform").
    config: TrainConfig.
    batch_labels: [B, *label_shape] the data batch's conditions.
    stored_labels: [B, *label_shape] the conditions ``replay.sample`` returned: stored labels for
      replayed chains, the batch's for fresh ones.
  """
  if not config.conditional:
    return None
  if config.negative_labels == "batch":
    return batch_labels
  if config.negative_labels == "buffer":
    return stored_labels
  return jax.random.randint(rng_key, batch_labels.shape, 0, config.num_classes, batch_labels.dtype)


def make_train_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  config: TrainConfig,
  *,
  axis_name: Optional[str] = None,
):
  """Builds the pure IGEBM training step.

  One step: draw chain starts from the replay buffer (``reinit_prob`` of them fresh noise), give
  them conditions by ``config.negative_labels``, run ``config.langevin`` on the current energy,
  score data and samples, apply contrastive divergence + L2 (+ KL, + cross-entropy) with the
  optimiser, and push the samples back into the buffer under the conditions they ran with.

  Args:
    model: the energy module; ``model.apply(variables, x, y, update_stats=...) -> [B]``.
    optimizer: the optax transformation used in ``create_train_state``.
    config: TrainConfig.
    axis_name: when run data-parallel (inside ``shard_map``), the device axis name: gradients and
      metrics are averaged over it, each device draws its own random numbers, and the replay
      buffer is split over the devices (``jebm.replay``).

  Returns:
    ``train_step(state, batch) -> (state, metrics)``; batch is ``{"image": [B, ...] uint8 or
    float, "label": [B, *label_shape]}``; metrics is a dict of scalars. With
    ``config.objective == "softmax"`` the step of ``make_softmax_step``.
  """

  if config.objective == "softmax":
    return make_softmax_step(model, optimizer, config, axis_name=axis_name)

  def train_step(state: TrainState, batch: Dict[str, jax.Array]):
    data_key, replay_key, label_key, chain_key = jax.random.split(_step_key(state, axis_name), 4)
    x_pos = positive_examples(data_key, batch["image"], config.augment)
    y_pos = batch["label"].astype(config.label_dtype) if config.conditional else None
    batch_size = x_pos.shape[0]

    model_state = _update_model_state(model, state, x_pos, y_pos)
    state = state.replace(model_state=model_state)
    energy_fn = from_model(model.apply, state.variables())
    x0, y_stored, _ = replay.sample(
      replay_key,
      state.replay,
      batch_size,
      init_fn=replay.uniform_init(config.init_low, config.init_high),
      reinit_prob=config.reinit_prob,
      fresh_labels=y_pos,
      axis_name=axis_name,
    )
    y_neg = negative_labels(label_key, config, y_pos, y_stored)
    kl_steps = config.kl_steps if config.kl_coeff else 0
    head = dataclasses.replace(config.langevin, num_steps=config.langevin.num_steps - kl_steps)
    x_head, chain = langevin.sample(chain_key, energy_fn, x0, head, y=y_neg)
    x_head = jax.lax.stop_gradient(x_head)

    def loss_fn(params):
      energy = from_model(model.apply, state.variables(params))
      x_neg, e_kl = x_head, None
      if kl_steps:  # differentiate through the chain's last steps (the paper's zero_kl=False)
        tail = dataclasses.replace(config.langevin, num_steps=kl_steps)
        x_kl, _ = langevin.sample(jax.random.fold_in(chain_key, 1), energy, x_head, tail, y=y_neg)
        frozen = from_model(model.apply, state.variables(jax.lax.stop_gradient(params)))
        x_neg, e_kl = jax.lax.stop_gradient(x_kl), frozen(x_kl, y_neg)
      e_pos, e_neg = energy(x_pos, y_pos), energy(x_neg, y_neg)
      loss, aux = losses.contrastive_divergence(
        e_pos, e_neg, l2_coeff=config.l2_coeff, e_kl=e_kl, kl_coeff=config.kl_coeff
      )
      if config.ce_coeff:
        n = max(1, round(config.ce_fraction * batch_size))  # the batch is in random order
        e_all = class_energy_table(energy, x_pos[:n], config.num_classes) / config.ce_temperature
        loss_ce, accuracy = losses.label_cross_entropy(e_all, y_pos[:n])
        loss = loss + config.ce_coeff * loss_ce
        aux = {**aux, "loss_ce": loss_ce, "train_accuracy": accuracy}
      if axis_name is not None:
        # Params are replicated, so shard_map's autodiff sums their gradients over devices;
        # averaging the loss makes that sum the gradient of the global-batch loss.
        loss = jax.lax.pmean(loss, axis_name)
      return loss, (x_neg, e_pos, e_neg, aux)

    (loss, (x_neg, e_pos, e_neg, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
    )
    params, opt_state = _apply_gradients(optimizer, state, grads)
    metrics = {
      "loss": loss,
      **aux,
      "energy_pos": jnp.mean(e_pos),
      "energy_pos_std": jnp.std(e_pos),
      "energy_neg": jnp.mean(e_neg),
      "energy_neg_std": jnp.std(e_neg),
      "input_grad_norm_start": jnp.mean(chain.grad_norm[0]),
      "input_grad_norm_end": jnp.mean(chain.grad_norm[-1]),
      "abs_diff_neg_pos": jnp.mean(jnp.abs(x_neg - x_pos)),
      "param_grad_norm": optax.tree.norm(grads),
    }
    if axis_name is not None:
      metrics = jax.lax.pmean(metrics, axis_name)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      replay=replay.push(state.replay, x_neg, y_neg, axis_name=axis_name),
    )
    return new_state, metrics

  train_step.axis_name = axis_name
  return train_step


def make_softmax_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  config: TrainConfig,
  *,
  axis_name: Optional[str] = None,
):
  """The same network trained as a softmax classifier: cross-entropy of
  p(y | x) = softmax_y(-E(x, y) / ce_temperature) on every example, no chains, no replay.

  Arguments and returned ``train_step(state, batch) -> (state, metrics)`` as in
  ``make_train_step``; metrics: loss, train_accuracy, energy_pos (mean E(x, y_true)),
  energy_neg (mean E(x, y) over the other labels), param_grad_norm.
  """

  def train_step(state: TrainState, batch: Dict[str, jax.Array]):
    x = positive_examples(_step_key(state, axis_name), batch["image"], config.augment)
    y = batch["label"].astype(jnp.int32)
    state = state.replace(model_state=_update_model_state(model, state, x, y))

    def loss_fn(params):
      energy = from_model(model.apply, state.variables(params))
      energies = class_energy_table(energy, x, config.num_classes)
      loss, accuracy = losses.label_cross_entropy(energies / config.ce_temperature, y)
      if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)  # see make_train_step
      return loss, (energies, accuracy)

    (loss, (energies, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = _apply_gradients(optimizer, state, grads)
    true = jax.nn.one_hot(y, config.num_classes, dtype=bool)
    metrics = {
      "loss": loss,
      "train_accuracy": accuracy,
      "energy_pos": jnp.mean(energies, where=true),
      "energy_neg": jnp.mean(energies, where=~true),
      "param_grad_norm": optax.tree.norm(grads),
    }
    if axis_name is not None:
      metrics = jax.lax.pmean(metrics, axis_name)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  train_step.axis_name = axis_name
  return train_step


def _step_key(state: TrainState, axis_name: Optional[str]) -> jax.Array:
  """This step's PRNG key: fold_in(rng, step), and the device index when data-parallel."""
  rng = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  return rng


def _apply_gradients(optimizer, state: TrainState, grads):
  """(new params, new optimiser state) after one optimiser update."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), opt_state
