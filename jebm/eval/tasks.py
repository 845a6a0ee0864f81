"""Evaluation tasks on an energy fn or on samples; each returns a JSON-serialisable dict.

Energy fns follow ``jebm.energy``: ``energy_fn(x [B, ...], y=None) -> [B]`` with
p(x) ∝ exp(-E(x)), so low energy = likely. Conditional energies take int class ids y [B] (the
models in ``jebm.models`` also take one-hot vectors). Images are float [N, H, W, C] in [0, 1].
Every task evaluates the energy in chunks (``batch_size`` images, or ``batch_size`` images times
K classes for conditional energies), so memory stays bounded for any N.

The tasks:
  - ``classification_accuracy``: the EBM as a classifier, label = argmin_y E(x, y);
  - ``ood_auroc``: -E(x) (or -min_y E(x, y)) as an in-distribution score against uniform noise,
    constant images and intensity-inverted test images;
  - ``energy_histogram_data``: energy statistics of train vs test images (+ a PNG);
  - ``sample_quality``: the judge's accuracy, FID, KID, IS and class histogram on samples.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jebm import metrics, viz
from jebm.energy import EnergyFn, check_energies
from jebm.eval import judge as judge_lib

_ENERGY_BATCH = 100


def _class_energies(energy_fn: EnergyFn, x: jax.Array, num_classes: int) -> jax.Array:
  """E(x, y) for every class: x [b, ...] -> [b, K], one energy_fn call on K * b examples."""
  b = x.shape[0]
  tiled = jnp.broadcast_to(x[None], (num_classes,) + x.shape)
  tiled = tiled.reshape((num_classes * b,) + x.shape[1:])
  ids = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), b)
  energies = check_energies(energy_fn(tiled, ids), tiled)
  return energies.reshape(num_classes, b).T


def _energy_table_fn(energy_fn, num_classes, batch_size):
  """A function images [N, ...] -> numpy float32 [N] energies (unconditional) or [N, K] class
  energies, evaluated in host-side chunks of exactly ``batch_size`` images (the last one padded),
  so one compilation serves every N."""
  if num_classes is None:
    chunk_fn = jax.jit(lambda x: check_energies(energy_fn(x), x))
  else:
    chunk_fn = jax.jit(lambda x: _class_energies(energy_fn, x, num_classes))

  def table(images):
    images = np.asarray(images, np.float32)
    if images.ndim < 1 or len(images) == 0:
      raise ValueError(f"Need a batch of images [N, ...] with N >= 1, got shape {images.shape}")
    chunks = []
    for start in range(0, len(images), batch_size):
      chunk = images[start : start + batch_size]
      padded = np.pad(chunk, ((0, batch_size - len(chunk)),) + ((0, 0),) * (chunk.ndim - 1))
      chunks.append(np.asarray(chunk_fn(padded))[: len(chunk)])
    return np.concatenate(chunks)

  return table


def class_energies(
  energy_fn: EnergyFn, images, num_classes: int, *, batch_size: int = _ENERGY_BATCH
) -> np.ndarray:
  """E(x, y) of every image under every class.

  Args:
    energy_fn: conditional energy fn, ``energy_fn(x [B, ...], y int [B]) -> [B]``.
    images: [N, ...] floats.
    num_classes: K; classes are the ids 0..K-1.
    batch_size: images per chunk (each chunk evaluates K * batch_size examples).

  Returns:
    float32 numpy [N, K].
  """
  return _energy_table_fn(energy_fn, num_classes, batch_size)(images)


def min_energy(
  energy_fn: EnergyFn, images, num_classes: Optional[int] = None, *, batch_size: int = _ENERGY_BATCH
) -> np.ndarray:
  """E(x) for an unconditional energy, min_y E(x, y) for a conditional one.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]``.
    images: [N, ...] floats.
    num_classes: None (unconditional) or K (conditional on class ids 0..K-1).
    batch_size: images per chunk.

  Returns:
    float32 numpy [N] energies (low = likely).
  """
  return _min_energy_fn(energy_fn, num_classes, batch_size)(images)


def _min_energy_fn(energy_fn, num_classes, batch_size):
  table_fn = _energy_table_fn(energy_fn, num_classes, batch_size)
  return table_fn if num_classes is None else (lambda images: table_fn(images).min(axis=1))


def classification_accuracy(
  energy_fn: EnergyFn, images, labels, num_classes: int, *, batch_size: int = _ENERGY_BATCH
) -> dict:
  """The conditional EBM as a classifier: predicted label = argmin_y E(x, y).

  Args:
    energy_fn: conditional energy fn, ``energy_fn(x [B, ...], y int [B]) -> [B]``.
    images: [N, ...] floats (e.g. test images in [0, 1]).
    labels: [N] true class ids in 0..K-1.
    num_classes: K.
    batch_size: images per chunk (K * batch_size energy evaluations at a time).

  Returns:
    ``{"accuracy": float, "num_examples": int}``.
  """
  labels = np.asarray(labels).reshape(-1)
  if len(labels) != len(images):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  predicted = class_energies(energy_fn, images, num_classes, batch_size=batch_size).argmin(axis=1)
  return {"accuracy": float(np.mean(predicted == labels)), "num_examples": int(len(labels))}


def ood_sets(rng_key: jax.Array, images) -> dict:
  """Out-of-distribution images shaped like ``images`` [N, ...] (floats in [0, 1]).

  Returns:
    dict name -> float32 [N, ...]: "uniform_noise" (i.i.d. U[0, 1] pixels), "constant" (each image
    one value drawn from U[0, 1]) and "inverted" (1 - images).
  """
  images = jnp.asarray(images, jnp.float32)
  noise_key, constant_key = jax.random.split(rng_key)
  constants = jax.random.uniform(constant_key, (images.shape[0],) + (1,) * (images.ndim - 1))
  return {
    "uniform_noise": jax.random.uniform(noise_key, images.shape),
    "constant": jnp.broadcast_to(constants, images.shape),
    "inverted": 1.0 - images,
  }


def ood_auroc(
  energy_fn: EnergyFn,
  test_images,
  *,
  rng_key: jax.Array,
  num_classes: Optional[int] = None,
  batch_size: int = _ENERGY_BATCH,
) -> dict:
  """How well the energy tells test images from synthetic out-of-distribution images.

  Score = -E(x) (or -min_y E(x, y)): higher = more in-distribution. The OOD sets are those of
  `ood_sets`, each as large as the test set.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]``.
    test_images: [N, ...] floats in [0, 1], the in-distribution examples.
    rng_key: PRNG key for the OOD sets.
    num_classes: None (unconditional) or K (conditional).
    batch_size: images per chunk.

  Returns:
    ``{"auroc_<set>": float for each set, "auroc_mean": float, "mean_energy_test": float,
    "mean_energy_<set>": float, "num_examples": int}``; an AUROC of 1 separates perfectly, 0.5 is
    chance.
  """
  energies = _min_energy_fn(energy_fn, num_classes, batch_size)  # One compilation for all sets.
  score = lambda x: -energies(x)
  s_in = score(test_images)
  out = {"mean_energy_test": float(-s_in.mean())}
  aurocs = []
  for name, images in ood_sets(rng_key, test_images).items():
    s_out = score(images)
    out[f"auroc_{name}"] = metrics.auroc(s_in, s_out)
    out[f"mean_energy_{name}"] = float(-s_out.mean())
    aurocs.append(out[f"auroc_{name}"])
  out.update(auroc_mean=float(np.mean(aurocs)), num_examples=int(len(s_in)))
  return out


def energy_histogram_data(
  energy_fn: EnergyFn,
  train_images,
  test_images,
  num_classes: Optional[int] = None,
  *,
  path=None,
  batch_size: int = _ENERGY_BATCH,
  title: str = "energies",
) -> dict:
  """Energy statistics of training vs test images (a gap hints at overfitting), plus a PNG.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]``.
    train_images: [N, ...] floats in [0, 1].
    test_images: [M, ...] floats in [0, 1].
    num_classes: None (E(x)) or K (min_y E(x, y)).
    path: if given, the two histograms are saved there as a PNG (``jebm.viz.save_histograms``).
    batch_size: images per chunk.
    title: the plot's title.

  Returns:
    ``{"train_mean", "train_std", "test_mean", "test_std": float, "num_train", "num_test": int,
    "png": str or None}``.
  """
  energy = _min_energy_fn(energy_fn, num_classes, batch_size)
  energies = {"train": energy(train_images), "test": energy(test_images)}
  out = {}
  for split, e in energies.items():
    e64 = e.astype(np.float64)
    out.update(
      {
        f"{split}_mean": float(e64.mean()),
        f"{split}_std": float(e64.std()),
        f"num_{split}": int(e.size),
      }
    )
  out["png"] = None if path is None else viz.save_histograms(path, energies, title)
  return out


def _fid_kid(feats_a, feats_b, prefix, kid_subset_size, kid_num_subsets, seed):
  kid_mean, kid_std = metrics.kernel_inception_distance(
    feats_a, feats_b, subset_size=kid_subset_size, num_subsets=kid_num_subsets, seed=seed
  )
  return {
    f"fid_{prefix}": metrics.frechet_distance(feats_a, feats_b),
    f"kid_{prefix}_mean": kid_mean,
    f"kid_{prefix}_std": kid_std,
  }


def sample_quality(
  samples,
  sample_labels,
  real_test_images,
  judge: judge_lib.Judge,
  *,
  feature_fn: Optional[judge_lib.FeatureFn] = None,
  kid_subset_size: int = 1000,
  kid_num_subsets: int = 100,
  seed: int = 0,
  is_splits: int = 10,
  batch_size: int = 500,
) -> dict:
  """Judge-based quality and diversity of generated samples, and FID/KID against real images.

  Args:
    samples: [N, H, W, C] generated images, floats in [0, 1] (N ≥ 2).
    sample_labels: [N] the classes the samples were conditioned on, or None (unconditional).
    real_test_images: [M, H, W, C] real held-out images, floats in [0, 1] (M ≥ 2).
    judge: a trained judge for this dataset (report its own test accuracy alongside).
    feature_fn: optional user feature network (``load_feature_fn``), e.g. Inception-v3: adds
      FID/KID on its features.
    kid_subset_size, kid_num_subsets, seed: KID settings (see
      ``metrics.kernel_inception_distance``).
    is_splits: Inception-Score splits (capped at N).
    batch_size: images per judge / feature_fn call.

  Returns:
    A dict of floats, ints and lists:
      "num_samples", "num_real";
      "judge_accuracy": fraction of samples the judge classifies as their condition (only when
        ``sample_labels`` is given);
      "judge_class_histogram": [K] counts of the judge's predicted classes;
      "judge_class_entropy": entropy (nats) of that histogram (log K = perfectly even);
      "judge_inception_score_mean", "judge_inception_score_std": IS of the judge's softmax;
      "fid_judge", "kid_judge_mean", "kid_judge_std": on judge features;
      "fid_user", "kid_user_mean", "kid_user_std": on feature_fn features (only with feature_fn).
  """
  logits = np.asarray(judge_lib.judge_logits(judge, samples, batch_size=batch_size), np.float64)
  predicted = logits.argmax(axis=1)
  counts = np.bincount(predicted, minlength=judge.config.num_classes)
  freqs = counts[counts > 0] / counts.sum()
  probs = np.asarray(jax.nn.softmax(logits, axis=1), np.float64)
  is_mean, is_std = metrics.inception_score(
    probs / probs.sum(1, keepdims=True), splits=min(is_splits, len(probs))
  )
  out = {"num_samples": int(len(predicted)), "num_real": int(len(real_test_images))}
  if sample_labels is not None:
    labels = np.asarray(sample_labels).reshape(-1)
    if len(labels) != len(predicted):
      raise ValueError(f"{len(predicted)} samples but {len(labels)} sample labels")
    out["judge_accuracy"] = float(np.mean(predicted == labels))
  out.update(
    judge_class_histogram=[int(c) for c in counts],
    judge_class_entropy=float(-np.sum(freqs * np.log(freqs))),
    judge_inception_score_mean=is_mean,
    judge_inception_score_std=is_std,
  )
  kid = (kid_subset_size, kid_num_subsets, seed)
  feats = lambda x: np.asarray(judge_lib.judge_features(judge, x, batch_size=batch_size))
  out.update(_fid_kid(feats(samples), feats(real_test_images), "judge", *kid))
  if feature_fn is not None:
    user = lambda x: judge_lib.apply_feature_fn(feature_fn, x, batch_size=batch_size)
    out.update(_fid_kid(user(samples), user(real_test_images), "user", *kid))
  return out
