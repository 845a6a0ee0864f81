"""Out-of-distribution detection with the energy: scores, OOD sets and AUROCs.

Scores (higher = more in-distribution; the paper's convention: in-distribution is the positive
class of the AUROC):
  unconditional models: "neg_energy" -E(x), and "neg_grad_norm" -||∇_x E(x)||;
  conditional models: "neg_min_energy" -min_y E(x, y) (the paper's), "logsumexp"
    logsumexp_y -E(x, y) (log p(x) up to a constant, JEM's), and "neg_grad_norm"
    -||∇_x logsumexp_y -E(x, y)|| (JEM's third score).
OOD sets (``load_ood_set``), each shaped like the model's inputs, floats in [0, 1]:
  "uniform" i.i.d. U(0, 1) pixels; "gaussian" N(0.5, 0.5²) pixels clipped to [0, 1] (the paper's
  random mix, kept in the data range); "constant" one U(0, 1) value per image; "inverted" 1 - x
  of the test images; "interp" the mean of each test image and the next (the paper's default);
  "npz:PATH" the ``images`` array (uint8 [N, H, W, C]) of an .npz file; "tfds:NAME" the test
  split of a prepared dataset (a ``jebm.data`` name).
"""

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jebm import metrics, viz
from jebm.energy import EnergyFn, check_energies, class_energy_table
from jebm.eval.batching import map_host_chunks
from jebm.eval.context import EvalContext
from jebm.eval.energies import chunk_size
from jebm.eval.judge import judge_logits

SYNTHETIC_SETS = ("uniform", "gaussian", "constant", "inverted", "interp")


def synthetic_ood_set(name: str, rng_key: jax.Array, images) -> np.ndarray:
  """One of ``SYNTHETIC_SETS`` (see the module docstring), as large as ``images`` [N, ...]
  (floats in [0, 1], the in-distribution test images); float32 numpy [N, ...]."""
  images = np.asarray(images, np.float32)
  shape, ones = images.shape, (1,) * (images.ndim - 1)
  if name == "uniform":
    out = jax.random.uniform(rng_key, shape)
  elif name == "gaussian":
    out = jnp.clip(0.5 + 0.5 * jax.random.normal(rng_key, shape), 0.0, 1.0)
  elif name == "constant":
    out = jnp.broadcast_to(jax.random.uniform(rng_key, (shape[0],) + ones), shape)
  elif name == "inverted":
    out = 1.0 - images
  elif name == "interp":
    out = 0.5 * (images + np.roll(images, 1, axis=0))
  else:
    raise ValueError(f"unknown synthetic OOD set {name!r}; known: {SYNTHETIC_SETS}")
  return np.asarray(out, np.float32)


def _npz_images(path: str) -> np.ndarray:
  try:
    with np.load(path, allow_pickle=False) as f:
      if "images" not in f.files:
        raise ValueError(f"OOD set npz:{path} has no 'images' array (it has {sorted(f.files)})")
      images = f["images"]
  except (OSError, EOFError) as e:
    raise ValueError(f"OOD set npz:{path}: cannot read it as an .npz file ({e})") from e
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(
      f"OOD set npz:{path}: 'images' must be uint8 [N, H, W, C], got {images.dtype} {images.shape}"
    )
  return images.astype(np.float32) / 255.0


def _tfds_images(name: str, data_dir, manual_dir) -> np.ndarray:
  from jebm import data  # TFDS is imported only when data is needed.

  images = data.arrays(name, "test", data_dir=data_dir, manual_dir=manual_dir)["image"]
  return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images


def check_ood_spec(spec: str):
  """(kind, target) of an OOD set spec: ("synthetic", name), ("npz", path) or ("tfds", name);
  ValueError for anything else (checked before any work is done)."""
  kind, _, target = spec.partition(":")
  if kind in ("npz", "tfds") and target:
    return kind, target
  if spec in SYNTHETIC_SETS:
    return "synthetic", spec
  raise ValueError(
    f"unknown OOD set {spec!r}: use one of {SYNTHETIC_SETS}, 'npz:PATH' or 'tfds:NAME'"
  )


def load_ood_set(
  spec: str,
  rng_key: jax.Array,
  test_images,
  *,
  data_dir=None,
  manual_dir=None,
  max_examples: Optional[int] = None,
) -> np.ndarray:
  """The OOD set named by ``spec`` (a ``SYNTHETIC_SETS`` name, "npz:PATH" or "tfds:NAME").

  Args:
    spec: the set.
    rng_key: PRNG key of the synthetic sets.
    test_images: [N, ...] in-distribution test images, floats in [0, 1]: synthetic sets are as
      large as it and derived from it; loaded sets must have its example shape.
    data_dir, manual_dir: where "tfds:" sets are prepared (see ``jebm.data``).
    max_examples: keep at most this many images of a loaded set (None = all).

  Returns:
    float32 numpy [M, ...] in [0, 1].

  Raises:
    ValueError: an unknown spec, an unreadable file, or images whose shape differs from the
      model's (the message names both shapes).
  """
  kind, target = check_ood_spec(spec)
  if kind in ("npz", "tfds"):
    images = _npz_images(target) if kind == "npz" else _tfds_images(target, data_dir, manual_dir)
    expected = tuple(np.shape(test_images)[1:])
    if tuple(images.shape[1:]) != expected:
      raise ValueError(
        f"OOD set {spec!r} has examples of shape {tuple(images.shape[1:])}, but the model "
        f"takes examples of shape {expected}"
      )
    return images[:max_examples]
  return synthetic_ood_set(spec, rng_key, test_images)


def _score_fn(energy_fn: EnergyFn, num_classes: Optional[int]):
  """Jitted ``x [b, ...] -> {score name: [b]}`` for the model's kind."""

  def log_p(x):  # log p(x) up to a constant, per example
    if num_classes is None:
      return -check_energies(energy_fn(x), x), None
    table = class_energy_table(energy_fn, x, num_classes)
    return jax.nn.logsumexp(-table, axis=1), table

  def total(x):
    lp, table = log_p(x)
    return jnp.sum(lp), (lp, table)

  def scores(x):
    grad, (lp, table) = jax.grad(total, has_aux=True)(x)
    grad_norm = jnp.sqrt(jnp.sum(jnp.square(grad.reshape(grad.shape[0], -1)), axis=1))
    if num_classes is None:
      return {"neg_energy": lp, "neg_grad_norm": -grad_norm}
    return {"neg_min_energy": -table.min(axis=1), "logsumexp": lp, "neg_grad_norm": -grad_norm}

  return jax.jit(scores)


def ood_scores_fn(
  energy_fn: EnergyFn, num_classes: Optional[int] = None, *, batch_size: Optional[int] = None
) -> Callable[[np.ndarray], Dict[str, np.ndarray]]:
  """A function images [N, ...] floats -> {score name: float32 [N]} giving every OOD score (see
  the module docstring), compiled once for any number of calls and any N.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]``.
    num_classes: None (unconditional) or K (conditional on class ids 0..K-1).
    batch_size: images per chunk (default ``jebm.eval.energies.chunk_size(K)``).
  """
  fn, size = _score_fn(energy_fn, num_classes), batch_size or chunk_size(num_classes)
  return lambda images: map_host_chunks(fn, np.asarray(images, np.float32), batch_size=size)


def auroc_row(scores_in, scores_out: Dict[str, np.ndarray]) -> dict:
  """``{set: AUROC of scores_in [N] against scores_out[set] [M], ..., "average": their mean}``."""
  aurocs = {name: metrics.auroc(scores_in, s) for name, s in scores_out.items()}
  return {**aurocs, "average": float(np.mean(list(aurocs.values())))}


def ood_benchmark(
  energy_fn: EnergyFn,
  in_images,
  ood_sets: Dict[str, np.ndarray],
  num_classes: Optional[int] = None,
  *,
  batch_size: Optional[int] = None,
  histogram_path=None,
) -> dict:
  """AUROC of every score on every OOD set against the in-distribution images.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]`` (low energy = likely).
    in_images: [N, ...] in-distribution images (the positives), floats.
    ood_sets: {set name: [M, ...] images}.
    num_classes: None (unconditional) or K.
    batch_size: images per chunk (default ``jebm.eval.energies.chunk_size(K)``).
    histogram_path: if given, ``histogram_path.format(score=name)`` gets one PNG per score with the
      score's histograms on every set.

  Returns:
    ``{score: {set: AUROC, ..., "average": mean AUROC over the sets}}``; 1 separates perfectly,
    0.5 is chance.
  """
  if not ood_sets:
    raise ValueError("ood_benchmark needs at least one OOD set")
  scores = ood_scores_fn(energy_fn, num_classes, batch_size=batch_size)
  s_in = scores(in_images)
  s_out = {name: scores(images) for name, images in ood_sets.items()}
  report = {}
  for score, values in s_in.items():
    report[score] = auroc_row(values, {name: s[score] for name, s in s_out.items()})
    if histogram_path is not None:
      named = {"in-distribution": values, **{name: s[score] for name, s in s_out.items()}}
      viz.save_histograms(
        histogram_path.format(score=score), named, f"OOD score {score}", xlabel=score
      )
  return report


def evaluate(ctx: EvalContext) -> dict:
  """The ``ood`` task: ``ood_benchmark`` of the test split (``ctx.max_test`` examples) against
  ``ctx.ood_sets``, with ``ood_<score>.png`` histograms. For labelled image datasets a baseline
  row, "baseline_judge_max_softmax": the maximum softmax probability of the judge, a supervised
  convnet trained on the same data (Hendrycks & Gimpel's OOD baseline)."""
  test = ctx.test_split()["image"]
  key = jax.random.key(ctx.seed)
  sets = {
    spec: load_ood_set(
      spec,
      jax.random.fold_in(key, i),
      test,
      data_dir=ctx.data_dir,
      manual_dir=ctx.manual_dir,
      max_examples=len(test),
    )
    for i, spec in enumerate(ctx.ood_sets or SYNTHETIC_SETS)
  }
  report = ood_benchmark(
    ctx.energy_fn, test, sets, ctx.num_classes, histogram_path=ctx.path("ood_{score}.png")
  )
  if ctx.has_judge:
    judge = ctx.judge()[0]
    max_softmax = lambda x: np.asarray(jax.nn.softmax(judge_logits(judge, x)).max(axis=1))
    report["baseline_judge_max_softmax"] = auroc_row(
      max_softmax(test), {name: max_softmax(x) for name, x in sets.items()}
    )
  return report
