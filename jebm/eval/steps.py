"""Adaptive computation time, measured: sample quality and diversity against the chain length.

The ``steps`` task runs the model's evaluation sampler from noise (per-class chains) and from the
replay buffer, and scores the chains after each length in ``StepsConfig.lengths`` (one chain per
sample, continued from one length to the next, so the longest length costs what it says): judge
accuracy on the conditioned label, FID and KID on judge features, diversity (mean pairwise
judge-feature distance within a class, and the fraction of distinct nearest training images) and
mean energy. Held-out training images are scored the same way, as the reference row (e.g. the FID
of two real sets of this size).

It also runs ``jebm.langevin.sample_adaptive`` from noise (each chain stops when its energy
settles) and compares it with fixed-length chains of the same mean number of steps from the same
starts.
"""

import dataclasses
import time
from typing import Tuple

import jax
import numpy as np

from jebm import config as config_lib
from jebm import generate, langevin, viz
from jebm.eval.context import EvalContext
from jebm.eval.generation import sample_quality
from jebm.eval.batching import map_host_chunks, map_keyed_chunks
from jebm.eval.judge import judge_features, judge_logits
from jebm.eval.settings import check_int, check_positive

CHAINS_PER_CALL = 250  # chains per compiled sampler call (bounded memory)
NEIGHBOUR_POOL = 10000  # training images (at most) searched for each sample's nearest neighbour


@dataclasses.dataclass(frozen=True)
class StepsConfig:
  """Settings of the steps task (flag ``--steps_<field>``); validated on construction.

  Attributes:
    lengths: chain lengths at which samples are scored, increasing.
    num_samples: chains per start kind (a multiple of the number of classes is kept for
      conditional models: num_samples // K per class).
    adaptive_tol: ``sample_adaptive``'s energy-change threshold (energy units).
    adaptive_window: steps over which that change is measured.
  """

  lengths: Tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000)
  num_samples: int = 500
  adaptive_tol: float = 1e-3
  adaptive_window: int = 10

  def __post_init__(self):
    object.__setattr__(self, "lengths", tuple(self.lengths))
    if not self.lengths or any(
      isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.lengths
    ):
      raise ValueError(f"lengths must be ints >= 1, got {self.lengths}")
    if list(self.lengths) != sorted(set(self.lengths)):
      raise ValueError(f"lengths must increase, got {self.lengths}")
    for name in ("num_samples", "adaptive_window"):
      check_int(name, getattr(self, name), 2)
    check_positive("adaptive_tol", self.adaptive_tol)


def within_class_distance(features, groups) -> float:
  """Mean Euclidean distance between the features [N, D] of two different examples of the same
  group (groups [N] ints), over all such pairs: low = samples of a class look alike."""
  features, groups = np.asarray(features, np.float64), np.asarray(groups)
  total, pairs = 0.0, 0
  for g in np.unique(groups):
    f = features[groups == g]
    if len(f) < 2:
      continue
    sq = np.sum(f**2, 1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * f @ f.T, 0.0))
    total, pairs = total + d.sum(), pairs + len(f) * (len(f) - 1)
  return total / pairs if pairs else float("nan")


def distinct_neighbour_fraction(images, pool) -> float:
  """The number of distinct nearest images (pixel L2) in ``pool`` [M, ...] of ``images`` [N, ...],
  over N: 1 = every sample has its own nearest training image, 1/N = all share one."""
  a = np.asarray(images, np.float32).reshape(len(images), -1)
  b = np.asarray(pool, np.float32).reshape(len(pool), -1)
  d = np.sum(b**2, 1)[None] - 2 * a @ b.T  # |a|^2 is the same along each row
  return len(np.unique(d.argmin(1))) / len(a)


def _scores(ctx, samples, labels, real, pool, energies) -> dict:
  judge, _ = ctx.judge()
  # KID on 20 subsets of half the samples, so that its spread over subsets means something.
  quality = sample_quality(
    samples, labels, real, judge, kid_subset_size=max(2, len(samples) // 2), kid_num_subsets=20,
    seed=ctx.seed,
  )  # fmt: skip
  groups = labels if labels is not None else np.asarray(judge_logits(judge, samples)).argmax(1)
  keep = ("judge_accuracy", "fid_judge", "kid_judge_mean", "kid_judge_std", "judge_class_entropy")
  return {
    **{k: quality[k] for k in keep if k in quality},
    "within_class_feature_distance": within_class_distance(judge_features(judge, samples), groups),
    "distinct_nearest_train_fraction": distinct_neighbour_fraction(samples, pool),
    "mean_energy": float(np.mean(energies)),
  }


def _sampler(ctx, num_steps):
  return config_lib.langevin_config(ctx.config, num_steps)


def _starts(ctx, settings, init, key):
  """num_samples // K * K chain starts (per-class labels from noise) and their labels or None."""
  k = ctx.num_classes or 1
  num = settings.num_samples // k * k
  labels = generate.class_labels(ctx.config, num // k) if init == "noise" else None
  x, y = generate.chain_starts(key, ctx.state, ctx.config, num, init, labels)
  return np.asarray(x), None if y is None else np.asarray(y)


def _energies(ctx, x, y):
  return _chunked(jax.jit(lambda x_, y_=None: ctx.energy_fn(x_, y_)), x, y)


def _chunked(fn, x, y, rng_key=None):
  """A jitted ``fn([key,] x_chunk, y_chunk or None)`` over chunks of CHAINS_PER_CALL chains;
  chunk i gets the key fold_in(rng_key, i) (``jebm.eval.batching.map_keyed_chunks``)."""
  arrays = (x,) if y is None else (x, y)
  if rng_key is None:
    return map_host_chunks(fn, arrays, batch_size=CHAINS_PER_CALL)
  return map_keyed_chunks(fn, rng_key, arrays, batch_size=CHAINS_PER_CALL)


def _curves(ctx, settings, init, real, pool, key):
  energy_fn = ctx.energy_fn
  x, y = _starts(ctx, settings, init, jax.random.fold_in(key, 0))
  per_length, done = {}, 0
  for length in settings.lengths:
    segment = jax.jit(
      lambda key_, x_, y_=None: langevin.sample(
        key_, energy_fn, x_, _sampler(ctx, length - done), y=y_
      )[0]
    )
    begin = time.time()
    x = _chunked(segment, x, y, jax.random.fold_in(key, length))
    seconds = time.time() - begin
    done = length
    per_length[str(length)] = {
      **_scores(ctx, x, y, real, pool, _energies(ctx, x, y)),
      "segment_seconds_with_compilation": seconds,
    }
    if init == "noise":
      per_length[str(length)]["_shown"] = x[:: max(1, len(x) // 10)][:10]
  return per_length


def _adaptive(ctx, settings, real, pool, key) -> dict:
  """sample_adaptive from noise against fixed chains of its mean length, from the same starts."""
  energy_fn = ctx.energy_fn
  x0, y = _starts(ctx, settings, "noise", jax.random.fold_in(key, 0))
  max_steps = settings.lengths[-1]
  adaptive = jax.jit(
    lambda key_, x_, y_=None: langevin.sample_adaptive(
      key_, energy_fn, x_, _sampler(ctx, max_steps),
      tol=settings.adaptive_tol, max_steps=max_steps, window=settings.adaptive_window, y=y_,
    )
  )  # fmt: skip
  begin = time.time()
  x, info = _chunked(adaptive, x0, y, key)
  adaptive_seconds = time.time() - begin
  steps = np.asarray(info.num_steps)
  mean_steps = max(1, int(round(steps.mean())))
  fixed = jax.jit(
    lambda key_, x_, y_=None: langevin.sample(key_, energy_fn, x_, _sampler(ctx, mean_steps), y=y_)[
      0
    ]
  )
  begin = time.time()
  x_fixed = _chunked(fixed, x0, y, key)
  fixed_seconds = time.time() - begin
  viz.save_histograms(
    ctx.path("steps_adaptive.png"),
    {"steps per chain (sample_adaptive)": steps},
    title=f"sample_adaptive from noise: tol {settings.adaptive_tol:g}, max {max_steps} steps",
    xlabel="Langevin steps",
  )
  return {
    "steps_mean": float(steps.mean()),
    "steps_quantiles": {str(q): float(np.quantile(steps, q)) for q in (0.1, 0.5, 0.9)},
    "steps_max": int(steps.max()),
    "fraction_at_max_steps": float(np.mean(steps >= max_steps)),
    "adaptive": {
      **_scores(ctx, x, y, real, pool, _energies(ctx, x, y)),
      "seconds_with_compilation": adaptive_seconds,
    },
    "fixed_same_mean_steps": {
      **_scores(ctx, x_fixed, y, real, pool, _energies(ctx, x_fixed, y)),
      "num_steps": mean_steps,
      "seconds_with_compilation": fixed_seconds,
    },
  }


def evaluate(ctx: EvalContext) -> dict:
  """The ``steps`` task (see the module docstring). Writes ``steps_<metric>.png`` curves, a grid
  ``steps_samples.png`` (one row per length, chains from noise) and ``steps_adaptive.png``.

  Returns:
    {"real": scores of held-out training images, "<init>": {"<length>": scores}, "adaptive": ...,
    "settings": ...}; scores hold judge_accuracy (conditional models), fid_judge, kid_judge_mean/
    std, judge_class_entropy, within_class_feature_distance, distinct_nearest_train_fraction,
    mean_energy.
  """
  settings: StepsConfig = ctx.steps or StepsConfig()
  key = jax.random.key(ctx.seed)
  real = ctx.split("test", settings.num_samples)["image"]
  # The reference row: training images scored like samples (against the same test images, as
  # many of them as samples), and the neighbour pool: the training images before them.
  train = ctx.split("train", NEIGHBOUR_POOL + settings.num_samples)
  n = min(settings.num_samples, len(train["image"]) // 2)
  pool, reference = train["image"][:-n], train["image"][-n:]
  labels = train["label"][-n:] if ctx.num_classes else None
  report = {"real": _scores(ctx, reference, labels, real, pool, _energies(ctx, reference, labels))}
  for i, init in enumerate(ctx.init):
    report[init] = _curves(ctx, settings, init, real, pool, jax.random.fold_in(key, i + 1))
  report["adaptive"] = _adaptive(ctx, settings, real, pool, jax.random.fold_in(key, 99))
  report["settings"] = dataclasses.asdict(settings)
  _plots(ctx, report, settings.lengths)
  return report


def _plots(ctx: EvalContext, report: dict, lengths) -> None:
  inits = [i for i in ctx.init if i in report]
  metrics = ("judge_accuracy", "fid_judge", "within_class_feature_distance", "mean_energy")
  for metric in metrics:
    curves = {
      f"from {init}": (list(lengths), [report[init][str(n)][metric] for n in lengths])
      for init in inits
      if metric in report[init][str(lengths[0])]
    }
    if curves:
      curves[f"held-out training images: {report['real'][metric]:.3g}"] = (
        [lengths[0], lengths[-1]], [report["real"][metric]] * 2
      )  # fmt: skip
      viz.save_curves(
        ctx.path(f"steps_{metric}.png"), curves, title=f"{metric} against chain length",
        xlabel="Langevin steps", ylabel=metric, log_x=True,
      )  # fmt: skip
  if "noise" in report:
    rows = [report["noise"][str(n)].pop("_shown") for n in lengths]
    viz.save_png(
      ctx.path("steps_samples.png"),
      viz.image_grid(np.concatenate(rows), ncol=len(rows[0])),
      scale=viz.readable_scale(rows[0].shape[1]),
    )
