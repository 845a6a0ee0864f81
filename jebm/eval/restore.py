"""The ``restore`` task: denoising, inpainting and cross-class mapping by Langevin dynamics on the
conditional energy (the paper's anticorrupt / boxcorrupt / crossclass / nearestneighbor), against
simple baselines, with memorisation checks.

Corruptions (``CORRUPTIONS``; each returns the corrupted images and the mask of pixels that the
restoration may move):
  salt_pepper     the paper's: 5% of the pixels set to 0.1, another 5% to 0.9 (every channel of a
                  pixel alike); every pixel may move (which ones are corrupted is not known);
  gaussian        x + N(0, gaussian_sigma^2) per entry, clipped to [0, 1]; every pixel may move;
  inpaint_bottom  the paper's boxcorrupt: the bottom half replaced by U(0, 1) noise; only it moves;
  inpaint_box     a random box per image (sides uniform in [H/4, H/2] x [W/4, W/2], anywhere)
                  replaced by U(0, 1) noise; only it moves.
Restoration is the paper's ``construct_steps``: the model's own sampler (noise 0.005, its step size
and gradient clip, clamp to [x_min, x_max]) under the true label, run for passes of the model's
training chain length (``Config.langevin_steps``; each of the sandbox's passes ran ``num_steps``):
  inpaint_passes = 10     the paper's boxcorrupt;
  crossclass_passes = 10  the paper's crossclass;
  noise_passes = 1        not the paper's 5 (anticorrupt, a picture only): on MNIST training
                          images (not the report's, never test ones) more passes redraw the digit
                          in the model's own style and raise the MSE: salt_pepper 0.014 / 0.018 /
                          0.023 / 0.030 after 1 / 2 / 3 / 5 passes, gaussian 0.014 / 0.019 /
                          0.024 / 0.031 (median filter 0.010 and 0.020); halving the step size
                          helped less than fewer passes. ``--restore_noise_passes=5`` is the
                          paper's setting.
With the label unknown, each image is restored under every label and the restoration of lowest
energy E(x_y, y) is kept.

Baselines: the corrupted image itself, a 3x3 median filter (noise corruptions) or the training
mean image in the masked pixels (inpainting). MSE is per image, over all pixels, then mean and
std over images; train and test images are restored alike, so a much lower train MSE would
reveal memorisation (the paper's boxcorrupt check). Nearest neighbours: class-conditional samples
from noise (the model's sampler, ``--steps`` or ``eval_langevin_steps`` steps), their 5 nearest
training images by pixel L2 (the paper's figure), and the mean L2 distance of samples to their
nearest training image beside that of test images: samples much closer to the training set than
test images are would be copies. All randomness derives from the evaluation seed.
"""

import dataclasses
import functools
import logging
import time
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from jebm import config as config_lib
from jebm import langevin, replay, viz
from jebm.energy import EnergyFn
from jebm.eval.settings import check_int, check_positive
from jebm.eval.batching import map_keyed_chunks
from jebm.eval.energies import energy_table_fn
from jebm.eval.judge import Judge, judge_logits

CORRUPTIONS = ("salt_pepper", "gaussian", "inpaint_bottom", "inpaint_box")
INPAINTING = ("inpaint_bottom", "inpaint_box")
SALT_PEPPER = ((0.05, 0.1), (0.05, 0.9))  # (fraction of pixels, value they are set to)
NUM_NEIGHBOURS = 5
CHAINS_PER_CALL = 250  # Langevin chains per compiled call
PANEL_ROWS = 16  # examples shown per picture


@dataclasses.dataclass(frozen=True)
class RestoreConfig:
  """Settings of the restore task; validated on construction (messages start with the field;
  its flag is ``--restore_<field>``).

  Attributes:
    corruptions: corruption names, from ``CORRUPTIONS``.
    num_images: train and test images restored per corruption (each split; the first ones), and
      test images mapped across classes.
    unknown_label_images: the first test images also restored under every label (K restorations
      each; 0 = skip the unknown-label variant; capped at num_images).
    noise_passes: sampler passes (each ``Config.langevin_steps`` steps) for salt_pepper, gaussian.
    inpaint_passes: sampler passes for inpaint_bottom, inpaint_box.
    crossclass_passes: sampler passes of the cross-class mapping.
    gaussian_sigma: standard deviation of the gaussian corruption.
    nn_samples_per_class: samples per class from noise for the nearest-neighbour check.
  """

  corruptions: Tuple[str, ...] = CORRUPTIONS
  num_images: int = 500
  unknown_label_images: int = 200
  noise_passes: int = 1
  inpaint_passes: int = 10
  crossclass_passes: int = 10
  gaussian_sigma: float = 0.3
  nn_samples_per_class: int = 10

  def __post_init__(self):
    object.__setattr__(self, "corruptions", tuple(self.corruptions))
    unknown = sorted(set(self.corruptions) - set(CORRUPTIONS))
    if unknown or not self.corruptions or len(set(self.corruptions)) < len(self.corruptions):
      raise ValueError(
        f"corruptions: unknown, repeated or none {unknown or list(self.corruptions)}; known: "
        f"{CORRUPTIONS}"
      )
    for name in ("num_images", "noise_passes", "inpaint_passes", "crossclass_passes"):
      check_int(name, getattr(self, name), 1)
    check_int("nn_samples_per_class", self.nn_samples_per_class, 1)
    check_int("unknown_label_images", self.unknown_label_images, 0)
    check_positive("gaussian_sigma", self.gaussian_sigma)

  def passes(self, corruption: str) -> int:
    """Sampler passes that restore ``corruption``."""
    return self.inpaint_passes if corruption in INPAINTING else self.noise_passes


def check_corruption(kind: str) -> None:
  """ValueError unless ``kind`` is one of ``CORRUPTIONS``."""
  if kind not in CORRUPTIONS:
    raise ValueError(f"unknown corruption {kind!r}; known: {CORRUPTIONS}")


def _check_images(images) -> jax.Array:
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[0] == 0 or not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
      f"corruptions take float images [B, H, W, C] with B >= 1, got {images.dtype} of shape "
      f"{images.shape}"
    )
  return images


# --- Corruptions --------------------------------------------------------------------------------


def corruption_mask(rng_key: jax.Array, shape, kind: str) -> jax.Array:
  """The pixels that corruption ``kind`` replaces, for images of ``shape`` [B, H, W, C].

  Returns:
    bool [B, H, W, 1]: the bottom half (inpaint_bottom), a random box per image with sides
    uniform in [H//4, H//2] x [W//4, W//2] (inpaint_box), or every pixel (the noise corruptions,
    which may touch any pixel).
  """
  check_corruption(kind)
  b, h, w = shape[0], shape[1], shape[2]
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]
  if kind == "inpaint_bottom":
    return jnp.broadcast_to(rows >= h // 2, (b, h, w, 1))
  if kind == "inpaint_box":
    keys = jax.random.split(rng_key, 4)
    bh = jax.random.randint(keys[0], (b,), max(1, h // 4), max(1, h // 2) + 1)
    bw = jax.random.randint(keys[1], (b,), max(1, w // 4), max(1, w // 2) + 1)
    top = jax.random.randint(keys[2], (b,), 0, h - bh + 1)
    left = jax.random.randint(keys[3], (b,), 0, w - bw + 1)
    at = lambda v: v[:, None, None, None]
    return (rows >= at(top)) & (rows < at(top + bh)) & (cols >= at(left)) & (cols < at(left + bw))
  return jnp.ones((b, h, w, 1), bool)


def corrupt(
  rng_key: jax.Array,
  images,
  kind: str,
  *,
  sigma: float = RestoreConfig.gaussian_sigma,
  x_range: Tuple[float, float] = (0.0, 1.0),
):
  """Corrupts images (see the module docstring); the same key gives the same corruption.

  Args:
    rng_key: PRNG key.
    images: float [B, H, W, C] in ``x_range``.
    kind: one of ``CORRUPTIONS``.
    sigma: standard deviation of the gaussian corruption.
    x_range: (low, high): gaussian noise and inpainting's uniform fill stay inside it.

  Returns:
    (corrupted float [B, H, W, C], mask bool [B, H, W, 1]: the pixels restoration may move).
  """
  check_corruption(kind)
  x = _check_images(images)
  low, high = (float(v) for v in x_range)
  index = jnp.int32(CORRUPTIONS.index(kind))
  return _jitted_corrupt()(rng_key, x, jnp.float32(sigma), index, x_range=(low, high))


def _corrupt(rng_key, x, sigma, index, *, x_range):
  """``corrupt`` of the kind CORRUPTIONS[index] (traced: one compilation serves every kind)."""
  mask_key, fill_key = jax.random.split(rng_key)
  low, high = x_range

  def salt_pepper():
    u = jax.random.uniform(fill_key, x.shape[:3] + (1,))
    (f0, v0), (f1, v1) = SALT_PEPPER
    return jnp.where(u < f0, v0, jnp.where(u < f0 + f1, v1, x)), jnp.ones(x.shape[:3] + (1,), bool)

  def gaussian():
    noisy = jnp.clip(x + sigma * jax.random.normal(fill_key, x.shape, x.dtype), low, high)
    return noisy, jnp.ones(x.shape[:3] + (1,), bool)

  def inpaint(kind):
    mask = corruption_mask(mask_key, x.shape, kind)
    return jnp.where(mask, jax.random.uniform(fill_key, x.shape, x.dtype, low, high), x), mask

  branches = {"salt_pepper": salt_pepper, "gaussian": gaussian}
  branches.update({kind: functools.partial(inpaint, kind) for kind in INPAINTING})
  out, mask = jax.lax.switch(index, [branches[kind] for kind in CORRUPTIONS])
  return out.astype(x.dtype), mask


@functools.cache
def _jitted_corrupt():
  return jax.jit(_corrupt, static_argnames="x_range")


def median_filter(images) -> np.ndarray:
  """The 3x3 per-channel median filter of images [B, H, W, C] (the noise corruptions' baseline)."""
  return scipy.ndimage.median_filter(np.asarray(images), size=(1, 3, 3, 1), mode="nearest")


def mean_fill(images, mask, mean_image) -> np.ndarray:
  """Images [B, H, W, C] with the masked pixels (mask [B, H, W, 1]) set to ``mean_image``
  [H, W, C] (the inpainting corruptions' baseline)."""
  return np.where(np.asarray(mask), np.asarray(mean_image)[None], np.asarray(images))


def mse_per_image(a, b) -> np.ndarray:
  """Mean squared difference of each image pair, a and b [N, ...] -> [N] (float64)."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return np.mean(np.square(d).reshape(len(d), -1), axis=1)


# --- Restoration --------------------------------------------------------------------------------


def restore_images(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  corrupted,
  labels,
  sampler: langevin.LangevinConfig,
  mask=None,
) -> jax.Array:
  """Langevin dynamics on E(., labels) from the corrupted images (jit-able).

  Args:
    rng_key: PRNG key.
    energy_fn: conditional energy ``E(x [B, ...], y int [B]) -> [B]``; low = likely.
    corrupted: float [B, ...] chain starts.
    labels: int [B] the condition of each chain.
    sampler: LangevinConfig (num_steps = the whole restoration).
    mask: None (every entry moves) or bool broadcastable to corrupted (only masked entries move;
      the others stay bit-identical).

  Returns:
    restored [B, ...].
  """
  corrupted = jnp.asarray(corrupted)
  labels = jnp.asarray(labels)
  if labels.shape != corrupted.shape[:1]:
    raise ValueError(
      f"labels must be [B] for images [B, ...], got {labels.shape}, {corrupted.shape}"
    )
  return langevin.sample(rng_key, energy_fn, corrupted, sampler, y=labels, mask=mask)[0]


def restore_unknown_label(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  corrupted,
  num_classes: int,
  sampler: langevin.LangevinConfig,
  mask=None,
):
  """Restores each image under every label and keeps the one of lowest energy E(x_y, y).

  Args:
    rng_key, energy_fn, sampler: as in ``restore_images``.
    corrupted: float [B, ...].
    num_classes: K: the labels 0..K-1 are tried.
    mask: as in ``restore_images``.

  Returns:
    (restored [B, ...] under the picked label, picked labels int [B], energies [B, K] of every
    label's restoration).
  """
  x = jnp.asarray(corrupted)
  b = x.shape[0]
  mask = langevin.check_mask(mask, x)
  xs = jnp.repeat(x, num_classes, axis=0)  # [B * K, ...], image-major
  ys = jnp.tile(jnp.arange(num_classes), b)
  masks = None if mask is None else jnp.repeat(jnp.broadcast_to(mask, x.shape), num_classes, 0)
  restored = restore_images(rng_key, energy_fn, xs, ys, sampler, masks)
  energies = energy_fn(restored, ys).reshape(b, num_classes)
  picked = jnp.argmin(energies, axis=1)
  per_label = restored.reshape((b, num_classes) + x.shape[1:])
  return per_label[jnp.arange(b), picked], picked.astype(jnp.int32), energies


def restorers(energy_fn: EnergyFn, sampler: langevin.LangevinConfig, num_classes: int):
  """``compiled(num_steps, unknown_label)``: a jitted ``restore_images(key, x [B, ...], y [B],
  mask)`` or ``restore_unknown_label(key, x [B, ...], mask)`` (both as above, ``sampler`` with
  ``num_steps`` steps), compiled once per (num_steps, unknown_label)."""
  cache = {}

  def compiled(num_steps: int, unknown_label: bool):
    if (num_steps, unknown_label) not in cache:
      s = dataclasses.replace(sampler, num_steps=num_steps)
      cache[num_steps, unknown_label] = jax.jit(
        (lambda key, x, m: restore_unknown_label(key, energy_fn, x, num_classes, s, m))
        if unknown_label
        else (lambda key, x, y, m: restore_images(key, energy_fn, x, y, s, m))
      )
    return cache[num_steps, unknown_label]

  return compiled


def _mse_entries(names_and_images, clean) -> dict:
  """{name: mean MSE to clean, name + "_std": its std over images} for each (name, images)."""
  out = {}
  for name, images in names_and_images:
    values = mse_per_image(images, clean)
    out[name], out[name + "_std"] = float(values.mean()), float(values.std())
  return out


def _unknown_label_entries(
  rng_key, fn, num_classes, corrupted, mask, clean, labels, restored, table
):
  """The unknown-label entries of ``corruption_report`` (fn: a compiled restore_unknown_label;
  restored: the true-label restorations of the same images; table: ``energy_table``)."""
  batch = max(1, CHAINS_PER_CALL // num_classes)
  unknown, picked, _ = map_keyed_chunks(fn, rng_key, (corrupted, mask), batch_size=batch)
  return {
    **_mse_entries((("mse_test_unknown_label", unknown),), clean),
    "unknown_label_accuracy": float(np.mean(picked == labels)),
    "unknown_label_num_images": int(len(labels)),
    "mse_test_true_label_same_images": float(mse_per_image(restored, clean).mean()),
    "corrupted_energy_classifier_accuracy": float(
      np.mean(table(corrupted).argmin(axis=1) == labels)
    ),
  }


def corruption_report(
  rng_key: jax.Array,
  kind: str,
  compiled,
  splits: dict,
  num_classes: int,
  pass_steps: int,
  options: RestoreConfig,
  *,
  mean_image,
  energy_table: Callable,
  x_range: Tuple[float, float] = (0.0, 1.0),
):
  """Restoration of one corruption on the train and the test images, with its baselines.

  Args:
    rng_key: PRNG key of the corruptions and chains.
    kind: a corruption of ``CORRUPTIONS``.
    compiled: from ``restorers``.
    splits: {"train": {...}, "test": {...}}, each {"image": [N, H, W, C], "label": int [N]}.
    num_classes: K.
    pass_steps: Langevin steps of one sampler pass.
    options: RestoreConfig (passes, gaussian_sigma, unknown_label_images).
    mean_image: [H, W, C] the training mean (the inpainting baseline).
    energy_table: images [N, ...] -> E(x, y) [N, K] (the classifier of the corrupted images).
    x_range: the data range.

  Returns:
    (report, (corrupted, restored, clean) test images for the picture). The report has
    "mse_{split}", "mse_corrupted_{split}", "mse_baseline_{split}" (each with "_std") for split
    train and test, "baseline", "passes", "langevin_steps", "mse_gap_test_minus_train", and with
    unknown_label_images > 0 "mse_test_unknown_label" (+ "_std"), "unknown_label_accuracy",
    "unknown_label_num_images", "mse_test_true_label_same_images",
    "corrupted_energy_classifier_accuracy".
  """
  steps = options.passes(kind) * pass_steps
  inpainting = kind in INPAINTING
  report = {
    "baseline": "mean_fill" if inpainting else "median_filter",
    "passes": options.passes(kind),
    "langevin_steps": steps,
  }
  for i, name in enumerate(("train", "test")):
    key = jax.random.fold_in(rng_key, i)
    clean, labels = np.asarray(splits[name]["image"]), np.asarray(splits[name]["label"])
    corrupted, mask = corrupt(
      jax.random.fold_in(key, 0), clean, kind, sigma=options.gaussian_sigma, x_range=x_range
    )
    corrupted, mask = np.asarray(corrupted), np.asarray(mask)
    restored = map_keyed_chunks(
      compiled(steps, False),
      jax.random.fold_in(key, 1),
      (corrupted, labels, mask),
      batch_size=CHAINS_PER_CALL,
    )
    baseline = mean_fill(corrupted, mask, mean_image) if inpainting else median_filter(corrupted)
    report.update(
      _mse_entries(
        (
          (f"mse_{name}", restored),
          (f"mse_corrupted_{name}", corrupted),
          (f"mse_baseline_{name}", baseline),
        ),
        clean,
      )
    )
  report["mse_gap_test_minus_train"] = report["mse_test"] - report["mse_train"]
  u = min(options.unknown_label_images, len(clean))
  if u:
    key, fn = jax.random.fold_in(rng_key, 2), compiled(steps, True)
    test = (corrupted[:u], mask[:u], clean[:u], labels[:u], restored[:u])
    report.update(_unknown_label_entries(key, fn, num_classes, *test, energy_table))
  return report, (corrupted[:PANEL_ROWS], restored[:PANEL_ROWS], clean[:PANEL_ROWS])


def judge_predictions(judge: Judge, images) -> np.ndarray:
  """The judge's labels [N] of images [N, H, W, C]."""
  return np.asarray(jnp.argmax(judge_logits(judge, images), axis=-1))


def crossclass_report(
  rng_key: jax.Array,
  compiled,
  images,
  labels,
  num_classes: int,
  num_steps: int,
  *,
  judge: Judge,
  energy_table: Callable,
):
  """The paper's cross-class mapping: test images of class a, Langevin under label (a + 1) mod K.

  Args:
    rng_key: PRNG key of the chains.
    compiled: from ``restorers``.
    images: [N, H, W, C] start images; labels: int [N] their classes.
    num_classes: K.
    num_steps: Langevin steps of the mapping.
    judge: the dataset's judge classifier.
    energy_table: images [N, ...] -> E(x, y) [N, K].

  Returns:
    (report, (start, mapped) first images for the picture). Report: "judge_accuracy" (how often
    the judge reads a mapped image as its target), "judge_accuracy_start_as_target" (the same
    of the start images: the baseline), "judge_accuracy_start_as_source",
    "judge_accuracy_mapped_as_source", "energy_classifier_accuracy" (argmin_y E(mapped, y) is
    the target), "mse_start_to_mapped", "num_images", "langevin_steps", "target".
  """
  images, labels = np.asarray(images), np.asarray(labels)
  targets = ((labels + 1) % num_classes).astype(labels.dtype)
  everywhere = np.ones(images.shape[:3] + (1,), bool)
  mapped = map_keyed_chunks(
    compiled(num_steps, False), rng_key, (images, targets, everywhere), batch_size=CHAINS_PER_CALL
  )
  start, end = judge_predictions(judge, images), judge_predictions(judge, mapped)
  report = {
    "judge_accuracy": float(np.mean(end == targets)),
    "judge_accuracy_start_as_target": float(np.mean(start == targets)),
    "judge_accuracy_start_as_source": float(np.mean(start == labels)),
    "judge_accuracy_mapped_as_source": float(np.mean(end == labels)),
    "energy_classifier_accuracy": float(np.mean(energy_table(mapped).argmin(axis=1) == targets)),
    "mse_start_to_mapped": float(mse_per_image(mapped, images).mean()),
    "num_images": int(len(images)),
    "langevin_steps": int(num_steps),
    "target": "(source + 1) mod K",
  }
  return report, (images[:PANEL_ROWS], mapped[:PANEL_ROWS])


# --- Nearest neighbours -------------------------------------------------------------------------


def _merge_nearest(best_d, best_i, q, part, start, valid, *, k):
  """The k smallest squared distances of queries q [Q, D] among best_d [Q, k] and part [P, D]
  (its first ``valid`` rows, indices start + row)."""
  d2 = jnp.sum(q * q, 1)[:, None] - 2.0 * q @ part.T + jnp.sum(part * part, 1)[None]
  rows = jnp.arange(part.shape[0])
  d2 = jnp.where(rows[None] < valid, d2, jnp.inf)
  d = jnp.concatenate([best_d, d2], axis=1)
  i = jnp.concatenate([best_i, jnp.broadcast_to(start + rows, d2.shape)], axis=1)
  neg, pos = jax.lax.top_k(-d, k)
  return -neg, jnp.take_along_axis(i, pos, axis=1)


def nearest_neighbours(queries, reference, k: int = NUM_NEIGHBOURS, *, chunk_size: int = 8192):
  """The k nearest reference examples of each query by L2 distance, in bounded memory.

  Args:
    queries: [Q, ...] floats; reference: [R, ...] floats of the same example shape.
    k: neighbours per query, 1 <= k <= R.
    chunk_size: reference rows per compiled call (queries go 1000 at a time).

  Returns:
    (distances float64 [Q, k] ascending, indices int [Q, k] into reference).
  """
  q = np.asarray(queries, np.float32).reshape(len(queries), -1)
  r = np.asarray(reference, np.float32).reshape(len(reference), -1)
  if not (isinstance(k, int) and 1 <= k <= len(r)) or q.shape[1:] != r.shape[1:] or not len(q):
    raise ValueError(
      f"nearest_neighbours needs Q >= 1 queries and R >= k >= 1 reference examples of one size, "
      f"got queries {np.shape(queries)}, reference {np.shape(reference)}, k={k!r}"
    )
  chunk = min(chunk_size, len(r))
  merge = jax.jit(_merge_nearest, static_argnames="k")
  found = []
  for qs in range(0, len(q), 1000):
    part_q = q[qs : qs + 1000]
    best = (np.full((len(part_q), k), np.inf, np.float32), np.zeros((len(part_q), k), np.int32))
    for start in range(0, len(r), chunk):
      part = r[start : start + chunk]
      padded = np.pad(part, ((0, chunk - len(part)), (0, 0)))
      best = merge(*best, part_q, padded, start, len(part), k=k)
    found.append(np.asarray(best[1]))
  idx = np.concatenate(found)
  exact = np.sqrt(np.sum(np.square(q[:, None].astype(np.float64) - r[idx]), axis=2))
  order = np.argsort(exact, axis=1, kind="stable")
  return np.take_along_axis(exact, order, 1), np.take_along_axis(idx, order, 1)


def class_samples(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  num_classes: int,
  per_class: int,
  example_shape,
  sampler: langevin.LangevinConfig,
  init_range: Tuple[float, float] = (0.0, 1.0),
):
  """Class-conditional samples from uniform noise: Langevin on E(., y), ``sampler`` settings.

  Returns:
    (samples [K * per_class, *example_shape], labels int [K * per_class]: 0, 0, ..., 1, ...).
  """
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
  x0 = replay.uniform_init(*init_range)(
    jax.random.fold_in(rng_key, 0), (len(labels),) + tuple(example_shape)
  )
  fn = jax.jit(lambda key, x, y: langevin.sample(key, energy_fn, x, sampler, y=y)[0])
  samples = map_keyed_chunks(
    fn, jax.random.fold_in(rng_key, 1), (x0, labels), batch_size=CHAINS_PER_CALL
  )
  return samples, labels


def _summary(prefix: str, values) -> dict:
  values = np.asarray(values, np.float64)
  return {
    f"{prefix}_mean": float(values.mean()),
    f"{prefix}_std": float(values.std()),
    f"{prefix}_median": float(np.median(values)),
  }


def nearest_neighbour_report(samples, labels, train_images, test_images, *, judge: Judge):
  """Nearest training images of generated samples, beside those of real test images.

  Args:
    samples: [S, H, W, C] generated images; labels: int [S] their conditions.
    train_images: [R, H, W, C] the training split; test_images: [T, H, W, C].
    judge: the dataset's judge classifier (how recognisable the samples are).

  Returns:
    (report, (samples, neighbours [S, NUM_NEIGHBOURS, H, W, C])). Report:
    "sample_to_train_l2_{mean,std,median}" (pixel L2 from each sample to its nearest training
    image), "test_to_train_l2_{mean,std,median}" (the same of test images), their ratio
    "sample_over_test_l2", "samples_judge_accuracy", "num_samples", "num_test_images".
  """
  distances, indices = nearest_neighbours(samples, train_images, NUM_NEIGHBOURS)
  test_distances, _ = nearest_neighbours(test_images, train_images, 1)
  report = {
    **_summary("sample_to_train_l2", distances[:, 0]),
    **_summary("test_to_train_l2", test_distances[:, 0]),
    "samples_judge_accuracy": float(np.mean(judge_predictions(judge, samples) == labels)),
    "num_samples": int(len(samples)),
    "num_test_images": int(len(test_images)),
  }
  report["sample_over_test_l2"] = (
    report["sample_to_train_l2_mean"] / report["test_to_train_l2_mean"]
  )
  return report, (np.asarray(samples), np.asarray(train_images)[indices])


# --- The task -----------------------------------------------------------------------------------


class _Parts:
  """What the parts of the task share: the model, its data, the compiled chains, the outputs."""

  def __init__(self, ctx, options: RestoreConfig):
    config = ctx.config
    self.ctx, self.options, self.k = ctx, options, ctx.num_classes
    self.key = jax.random.key(ctx.seed)
    self.train_all = ctx.split("train")
    self.splits = {s: ctx.split(s, options.num_images) for s in ("train", "test")}
    self.one_pass = config_lib.langevin_config(config)
    self.compiled = restorers(ctx.energy_fn, self.one_pass, self.k)
    self.table = energy_table_fn(ctx.energy_fn, self.k)
    self.judge = ctx.judge()[0]
    self.report, self.seconds, self.png = {}, {}, {}

  def timed(self, name: str, run: Callable):
    t0 = time.time()
    out = run()
    self.seconds[name] = round(time.time() - t0, 1)
    logging.info("restore: %s in %.0f s", name, self.seconds[name])
    return out

  def save_rows(self, name: str, filename: str, columns, rows_per_block: int = 8) -> None:
    """Rows of examples, one column per array of ``columns`` (each [N, H, W, C]), as a PNG."""
    grid = viz.rows_grid(columns, rows_per_block=rows_per_block)
    scale = viz.readable_scale(np.shape(columns[0])[1], 64)
    self.png[name] = viz.save_png(self.ctx.path(filename), grid, scale=scale)


def _run_corruptions(parts: _Parts) -> None:
  config, mean_image = parts.ctx.config, parts.train_all["image"].mean(axis=0)
  for kind in parts.options.corruptions:  # keys by name: numbers never depend on the others
    run = functools.partial(
      corruption_report,
      jax.random.fold_in(parts.key, CORRUPTIONS.index(kind)),
      kind,
      parts.compiled,
      parts.splits,
      parts.k,
      parts.one_pass.num_steps,
      parts.options,
      mean_image=mean_image,
      energy_table=parts.table,
      x_range=(config.x_min, config.x_max),
    )
    parts.report[kind], pictures = parts.timed(kind, run)
    parts.save_rows(kind, f"restore_{kind}.png", pictures)


def _run_crossclass(parts: _Parts) -> None:
  test = parts.splits["test"]
  run = functools.partial(
    crossclass_report,
    jax.random.fold_in(parts.key, 100),
    parts.compiled,
    test["image"],
    test["label"],
    parts.k,
    parts.options.crossclass_passes * parts.one_pass.num_steps,
    judge=parts.judge,
    energy_table=parts.table,
  )
  parts.report["crossclass"], pictures = parts.timed("crossclass", run)
  parts.save_rows("crossclass", "restore_crossclass.png", pictures)


def _run_nearest_neighbours(parts: _Parts) -> None:
  config, per_class = parts.ctx.config, parts.options.nn_samples_per_class
  steps = parts.ctx.langevin_steps or config.eval_langevin_steps
  sample = functools.partial(
    class_samples,
    jax.random.fold_in(parts.key, 200),
    parts.ctx.energy_fn,
    parts.k,
    per_class,
    config.example_shape,
    config_lib.langevin_config(config, steps),
    (config.init_low, config.init_high),
  )
  samples, labels = parts.timed("nearest_neighbour_samples", sample)
  report, (shown, neighbours) = parts.timed(
    "nearest_neighbours",
    lambda: nearest_neighbour_report(
      samples, labels, parts.train_all["image"], parts.splits["test"]["image"], judge=parts.judge
    ),
  )
  parts.report["nearest_neighbours"] = {**report, "langevin_steps": int(steps)}
  first = slice(None, None, per_class)  # the first sample of each class
  columns = [shown[first]] + [neighbours[first, j] for j in range(NUM_NEIGHBOURS)]
  parts.save_rows("nearest_neighbours", "restore_nearest.png", columns, rows_per_block=parts.k)


def evaluate(ctx) -> dict:
  """The ``restore`` task (see the module docstring) with ``ctx.restore`` (default
  RestoreConfig()): ``report[corruption]`` per corruption (``corruption_report``),
  ``report["crossclass"]``, ``report["nearest_neighbours"]``, "settings", "seconds" and "png"
  (restore_<corruption>.png: corrupted | restored | truth; restore_crossclass.png: start |
  mapped; restore_nearest.png: a sample per class | its 5 nearest training images)."""
  config = ctx.config
  if ctx.num_classes is None or len(config.example_shape) != 3:
    raise ValueError(
      "the restore task needs a conditional model (num_classes > 0) of image data [H, W, C]; "
      f"this checkpoint has num_classes={config.num_classes}, example_shape="
      f"{config.example_shape} (dataset {config.dataset!r})"
    )
  options = ctx.restore or RestoreConfig()
  parts = _Parts(ctx, options)
  _run_corruptions(parts)
  _run_crossclass(parts)
  _run_nearest_neighbours(parts)
  report = parts.report
  report["settings"] = {
    **dataclasses.asdict(options),
    "pass_steps": parts.one_pass.num_steps,
    "sampler": dataclasses.asdict(parts.one_pass),
    "salt_pepper": "5% of pixels set to 0.1, 5% to 0.9",
    "inpaint_box": "sides uniform in [H/4, H/2] x [W/4, W/2], placed uniformly",
    "images": "the first num_images of the train and the test split",
    "judge_test_accuracy": float(ctx.judge()[1]),
  }
  report["seconds"], report["png"] = parts.seconds, parts.png
  return report
