"""Quality and diversity of generated samples, judged by a classifier trained on real data.

The ``sample_quality`` task samples the model (its persistent replay chains run on, and fresh
per-class chains from noise), saves a grid of them and reports the judge's verdict: accuracy on the
conditioned label, FID/KID on judge features (or a user feature network), class histogram and IS.
"""

from typing import Optional

import jax
import numpy as np

from jebm import generate, metrics, viz
from jebm.eval.context import EvalContext
from jebm.eval.features import FeatureFn, apply_feature_fn, load_feature_fn
from jebm.eval.judge import Judge, judge_features, judge_logits


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
  judge: Judge,
  *,
  feature_fn: Optional[FeatureFn] = None,
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
    kid_subset_size, kid_num_subsets: KID settings (see ``metrics.kernel_inception_distance``).
    seed: seed of the KID subsets and of the Inception-Score shuffle.
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
  logits = np.asarray(judge_logits(judge, samples, batch_size=batch_size), np.float64)
  predicted = logits.argmax(axis=1)
  counts = np.bincount(predicted, minlength=judge.config.num_classes)
  freqs = counts[counts > 0] / counts.sum()
  probs = np.asarray(jax.nn.softmax(logits, axis=1), np.float64)
  is_mean, is_std = metrics.inception_score(
    probs / probs.sum(1, keepdims=True), splits=min(is_splits, len(probs)), seed=seed
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
  feats = lambda x: np.asarray(judge_features(judge, x, batch_size=batch_size))
  out.update(_fid_kid(feats(samples), feats(real_test_images), "judge", *kid))
  if feature_fn is not None:
    user = lambda x: apply_feature_fn(feature_fn, x, batch_size=batch_size)
    out.update(_fid_kid(user(samples), user(real_test_images), "user", *kid))
  return out


def _samples(ctx: EvalContext, init: str):
  """Samples of one kind of chain start (see ``jebm.generate``) and their conditions."""
  config, num = ctx.config, ctx.num_samples or ctx.config.eval_num_samples
  labels = None
  if init == "noise" and config.conditional:
    labels = generate.class_labels(config, max(1, num // config.num_classes))
  samples, labels = generate.generate_batched(
    jax.random.key(ctx.seed),
    ctx.state,
    config,
    num=num if labels is None else len(labels),
    labels=labels,
    num_steps=ctx.langevin_steps,
    init=init,
    ensemble=tuple(ctx.ensemble.values()),
  )
  return np.asarray(samples), None if labels is None else np.asarray(labels)


def evaluate(ctx: EvalContext) -> dict:
  """The ``sample_quality`` task: for each of ``ctx.init``, samples (chains cycle through the
  energies of ``ctx.ensemble`` too, when it holds checkpoints), a PNG grid of up to 100 of them
  sorted by class (``samples_<init>.png``), and the judge's verdict."""
  judge, judge_test_accuracy = ctx.judge()
  feature_fn = load_feature_fn(ctx.feature_fn) if ctx.feature_fn else None
  real = ctx.test_split()["image"]
  report = {}
  for init in ctx.init:
    samples, labels = _samples(ctx, init)
    shown = samples if labels is None else samples[np.argsort(labels, kind="stable")]
    viz.save_png(
      ctx.path(f"samples_{init}.png"),
      viz.image_grid(shown[:: max(1, len(shown) // 100)][:100]),
      scale=viz.readable_scale(samples.shape[1]),
    )
    report[init] = {
      **sample_quality(samples, labels, real, judge, feature_fn=feature_fn, seed=ctx.seed),
      "judge_test_accuracy": judge_test_accuracy,
      "langevin_steps": ctx.langevin_steps or ctx.config.eval_langevin_steps,
      "ensemble_checkpoints": [int(ctx.state.step), *ctx.ensemble],
      "parameter_average": bool(ctx.config.ema_decay),
    }
  return report
