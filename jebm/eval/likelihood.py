"""Log-likelihood of test data under p(x) ∝ exp(-E(x)) by annealed importance sampling.

The ``likelihood`` task estimates log Z of the trained energy over its data box [x_min, x_max]
(``jebm.ais``: forward chains from a tractable base give a stochastic lower bound; reverse chains
give an upper bound only when they start at exact model samples, which no trained image model has:
here they start at dequantised test images, so ``log_z_upper`` is an estimate, not a bound), and
from it the test log-likelihood in nats and bits per dimension, for each path length in
``LikelihoodConfig.temperatures`` (the gap between the two estimates against the path length is
saved as a PNG). A conditional model has one normaliser per class; its likelihood is
p(x) = mean_y p(x | y) (a uniform class prior), and p(x | y) at the true label is reported too.

Every jebm Config has a finite box (``jebm.ais`` bases refuse an unbounded one). The model is
p(x) ∝ exp(-E(x) / T) with T = 1 / ``LikelihoodConfig.inverse_temperature``: 1 is the density
contrastive divergence trains in theory; the paper's Langevin sampler runs at a far lower implied
temperature (PAPER.md §1.1), and other values show how the likelihood depends on it.
"""

import dataclasses
import math
import time
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jebm import ais, viz
from jebm.data import dequantize
from jebm.eval.context import EvalContext
from jebm.eval.energies import energy_table_fn
from jebm.eval.settings import check_int, check_positive

BASES = ("uniform", "gaussian")
QUANTISATION_LEVELS = 256  # uint8 images, dequantised as (x + u) / 256 as in training
STD_FLOOR = 0.01  # of the Gaussian base, so that constant pixels keep a proper density


@dataclasses.dataclass(frozen=True)
class LikelihoodConfig:
  """Settings of the likelihood task (flag ``--likelihood_<field>``); validated on construction.

  Attributes:
    temperatures: AIS path lengths (numbers of inverse temperatures, each >= 2), increasing; the
      last gives the reported numbers, all of them the gap curve.
    chains: forward chains (per class, for a conditional model), and as many reverse chains.
    leapfrog_steps: leapfrog steps of each HMC transition.
    base: "uniform" on the box, or "gaussian": a diagonal Gaussian with the per-pixel mean and
      standard deviation of dequantised training data, restricted to the box.
    num_images: test examples whose mean log-likelihood is reported.
    inverse_temperature: the model is p(x) ∝ exp(-inverse_temperature * E(x)).
  """

  temperatures: Tuple[int, ...] = (1000, 3000, 10000)
  chains: int = 16
  leapfrog_steps: int = 1
  base: str = "uniform"
  num_images: int = 500
  inverse_temperature: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "temperatures", tuple(self.temperatures))
    if not self.temperatures:
      raise ValueError("temperatures: give at least one number of temperatures")
    for k in self.temperatures:
      try:
        ais.check_num_temperatures(k)
      except ValueError as e:
        raise ValueError(f"temperatures: {e}") from None
    if list(self.temperatures) != sorted(set(self.temperatures)):
      raise ValueError(f"temperatures must increase, got {self.temperatures}")
    for name in ("chains", "leapfrog_steps", "num_images"):
      check_int(name, getattr(self, name), 1)
    check_positive("inverse_temperature", self.inverse_temperature)
    if self.base not in BASES:
      raise ValueError(f"base: unknown base {self.base!r}; known: {BASES}")


def _dequantized(ctx: EvalContext, split: str, limit: Optional[int], key) -> np.ndarray:
  """The split's examples as the model saw them in training: uint8 images as (x + u) / 256,
  other data as it is."""
  x = ctx.split(split, limit)["image"]
  if len(ctx.config.example_shape) != 3:
    return x
  return np.asarray(dequantize(key, np.round(x * 255.0)))


def _base(ctx: EvalContext, settings: LikelihoodConfig, key) -> ais.Base:
  config = ctx.config
  if settings.base == "uniform":
    return ais.uniform_base(config.example_shape, config.x_min, config.x_max)
  train = _dequantized(ctx, "train", 10000, key)
  std = np.maximum(train.std(axis=0), STD_FLOOR)
  return ais.truncated_normal_base(train.mean(axis=0), std, config.x_min, config.x_max)


def _reverse_starts(x, labels, num_classes, chains):
  """[chains * K] starts (K = 1 unconditional), row i of class i % K: the first test examples of
  each class."""
  if num_classes is None:
    return x[:chains]
  rows = [np.flatnonzero(labels == k)[:chains] for k in range(num_classes)]
  if min(len(r) for r in rows) < chains:
    raise ValueError(
      f"the likelihood task's reverse chains need {chains} test examples of every class; the "
      f"first --likelihood_num_images lack some (use more images or fewer chains)"
    )
  return x[np.stack(rows, axis=1).reshape(-1)]


def _bits_per_dim(log_likelihood_nats: float, dims: int, quantised: bool) -> float:
  """-log2 p per dimension; for quantised data, of the probability of the 8-bit bin (the density
  in [0, 1] times the bin volume 256^-D)."""
  nats = -log_likelihood_nats / dims + (math.log(QUANTISATION_LEVELS) if quantised else 0.0)
  return nats / math.log(2)


def evaluate(ctx: EvalContext) -> dict:
  """The ``likelihood`` task (see the module docstring). Writes ``likelihood_gap.png``.

  Returns a dict with, at the longest path: "log_z_lower", "log_z_upper" (log Z, or log sum_y Z_y
  for a conditional model; per class in "log_z_lower_per_class" / "..._upper_per_class"),
  "log_likelihood_nats" (mean over test examples, from log_z_lower: an estimate that is too high
  in expectation) and "log_likelihood_nats_from_upper", "bits_per_dim" (from log_z_lower) and
  "bits_per_dim_from_upper", "base_bits_per_dim" (the base distribution's, a baseline),
  "conditional_bits_per_dim" (p(x | true y), conditional models); "paths": per path length the
  estimates, their gap, mean acceptance rates and seconds; and "settings".
  """
  config, settings = ctx.config, ctx.likelihood or LikelihoodConfig()
  num_classes = ctx.num_classes
  k = num_classes or 1
  keys = jax.random.split(jax.random.key(ctx.seed), 4)
  base = _base(ctx, settings, keys[0])
  test = ctx.split("test", settings.num_images)
  x = _dequantized(ctx, "test", settings.num_images, keys[1])
  labels = test.get("label")
  beta = settings.inverse_temperature
  energy_fn = lambda x_, y_=None: beta * ctx.energy_fn(x_, y_)
  y = None if num_classes is None else jnp.tile(jnp.arange(k, dtype=jnp.int32), settings.chains)
  starts = jnp.asarray(_reverse_starts(x, labels, num_classes, settings.chains))

  paths = {}
  for num_temperatures in settings.temperatures:
    begin = time.time()
    run = jax.jit(
      lambda key: ais.log_z_bounds(
        key, energy_fn, base, num_temperatures, settings.chains * k, reverse_starts=starts, y=y,
        leapfrog_steps=settings.leapfrog_steps,
      )
    )  # fmt: skip
    bounds = jax.device_get(run(jax.random.fold_in(keys[2], num_temperatures)))
    per_class = lambda log_w: ais.log_mean_exp(log_w.reshape(settings.chains, k).T)  # [K]
    lower = base.log_z + per_class(bounds.forward_log_w)
    upper = base.log_z - per_class(bounds.reverse_log_w)
    log_z_lower, log_z_upper = float(jax.nn.logsumexp(lower)), float(jax.nn.logsumexp(upper))
    paths[str(num_temperatures)] = {
      "log_z_lower": log_z_lower,
      "log_z_upper": log_z_upper,
      "gap": log_z_upper - log_z_lower,
      "log_z_lower_per_class": [float(v) for v in lower],
      "log_z_upper_per_class": [float(v) for v in upper],
      "forward_acceptance": float(np.mean(bounds.forward_acceptance)),
      "reverse_acceptance": float(np.mean(bounds.reverse_acceptance)),
      "seconds": time.time() - begin,
    }

  longest = paths[str(settings.temperatures[-1])]
  energies = energy_table_fn(energy_fn, num_classes)(x).reshape(len(x), k)
  dims, quantised = int(np.prod(config.example_shape)), len(config.example_shape) == 3

  def log_likelihood(log_z_per_class):
    log_p_given_y = -energies - np.asarray(log_z_per_class)[None]
    return jax.nn.logsumexp(log_p_given_y, axis=1) - math.log(k), log_p_given_y

  from_lower, given_y = log_likelihood(longest["log_z_lower_per_class"])
  from_upper, _ = log_likelihood(longest["log_z_upper_per_class"])
  base_ll = float(np.mean(-np.asarray(base.energy(jnp.asarray(x))) - base.log_z))
  report = {
    **{
      name: longest[name]
      for name in ("log_z_lower", "log_z_upper", "log_z_lower_per_class", "log_z_upper_per_class")
    },
    "log_likelihood_nats": float(np.mean(from_lower)),
    "log_likelihood_nats_std": float(np.std(from_lower)),
    "log_likelihood_nats_from_upper": float(np.mean(from_upper)),
    "bits_per_dim": _bits_per_dim(float(np.mean(from_lower)), dims, quantised),
    "bits_per_dim_from_upper": _bits_per_dim(float(np.mean(from_upper)), dims, quantised),
    "base_bits_per_dim": _bits_per_dim(base_ll, dims, quantised),
    "quantised_bits": quantised,
    "reverse_starts": "dequantised test examples (not exact model samples: log_z_upper is an "
    "estimate, not a bound)",
    "num_images": len(x),
    "paths": paths,
    "settings": dataclasses.asdict(settings),
  }
  if num_classes is not None:
    true_label = given_y[np.arange(len(x)), np.asarray(labels)]
    report["conditional_bits_per_dim"] = _bits_per_dim(float(np.mean(true_label)), dims, quantised)
  _plot_gap(ctx.path("likelihood_gap.png"), paths)
  return report


def _plot_gap(path: str, paths: dict) -> None:
  lengths = [int(k) for k in paths]
  curve = lambda name: (lengths, [paths[str(n)][name] for n in lengths])
  curves = {
    "log Z lower bound (forward chains)": curve("log_z_lower"),
    "log Z estimate (reverse chains from test data)": curve("log_z_upper"),
  }
  viz.save_curves(
    path, curves, title="AIS: log Z against the path length", xlabel="temperatures",
    ylabel="log Z (nats)", log_x=True,
  )  # fmt: skip
