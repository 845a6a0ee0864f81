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

from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jebm import metrics, viz
from jebm.energy import EnergyFn, check_energies, class_energies
from jebm.eval.batching import map_host_chunks
from jebm.eval.context import EvalContext
from jebm.eval.energies import ENERGY_BATCH

SYNTHETIC_SETS = ("uniform", "gaussian", "constant", "inverted", "interp")
UNCONDITIONAL_SCORES = ("neg_energy", "neg_grad_norm")
CONDITIONAL_SCORES = ("neg_min_energy", "logsumexp", "neg_grad_norm")


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
  kind, _, target = spec.partition(":")
  if kind in ("npz", "tfds") and target:
    images = _npz_images(target) if kind == "npz" else _tfds_images(target, data_dir, manual_dir)
    expected = tuple(np.shape(test_images)[1:])
    if tuple(images.shape[1:]) != expected:
      raise ValueError(
        f"OOD set {spec!r} has examples of shape {tuple(images.shape[1:])}, but the model "
        f"takes examples of shape {expected}"
      )
    return images[:max_examples]
  if spec in SYNTHETIC_SETS:
    return synthetic_ood_set(spec, rng_key, test_images)
  raise ValueError(
    f"unknown OOD set {spec!r}: use one of {SYNTHETIC_SETS}, 'npz:PATH' or 'tfds:NAME'"
  )


def _score_fn(energy_fn: EnergyFn, num_classes: Optional[int]):
  """Jitted ``x [b, ...] -> {score name: [b]}`` for the model's kind."""

  def log_p(x):  # log p(x) up to a constant, per example
    if num_classes is None:
      return -check_energies(energy_fn(x), x), None
    table = class_energies(energy_fn, x, num_classes)
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


def ood_scores(
  energy_fn: EnergyFn, images, num_classes: Optional[int] = None, *, batch_size=ENERGY_BATCH
) -> Dict[str, np.ndarray]:
  """Every OOD score of images [N, ...] (see the module docstring): {score name: float32 [N]}.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]``.
    images: [N, ...] floats.
    num_classes: None (unconditional) or K (conditional on class ids 0..K-1).
    batch_size: images per chunk.
  """
  return map_host_chunks(
    _score_fn(energy_fn, num_classes), np.asarray(images, np.float32), batch_size=batch_size
  )


def ood_benchmark(
  energy_fn: EnergyFn,
  in_images,
  ood_sets: Dict[str, np.ndarray],
  num_classes: Optional[int] = None,
  *,
  batch_size: int = ENERGY_BATCH,
  histogram_path=None,
) -> dict:
  """AUROC of every score on every OOD set against the in-distribution images.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]`` (low energy = likely).
    in_images: [N, ...] in-distribution images (the positives), floats.
    ood_sets: {set name: [M, ...] images}.
    num_classes: None (unconditional) or K.
    batch_size: images per chunk.
    histogram_path: if given, ``histogram_path.format(score=name)`` gets one PNG per score with the
      score's histograms on every set.

  Returns:
    ``{score: {set: AUROC, ..., "average": mean AUROC over the sets}}``; 1 separates perfectly,
    0.5 is chance.
  """
  if not ood_sets:
    raise ValueError("ood_benchmark needs at least one OOD set")
  scores = lambda x: ood_scores(energy_fn, x, num_classes, batch_size=batch_size)
  s_in = scores(in_images)
  s_out = {name: scores(images) for name, images in ood_sets.items()}
  report = {}
  for score, values in s_in.items():
    aurocs = {name: metrics.auroc(values, s[score]) for name, s in s_out.items()}
    report[score] = {**aurocs, "average": float(np.mean(list(aurocs.values())))}
    if histogram_path is not None:
      named = {"in-distribution": values, **{name: s[score] for name, s in s_out.items()}}
      viz.save_histograms(
        histogram_path.format(score=score), named, f"OOD score {score}", xlabel=score
      )
  return report


def evaluate(ctx: EvalContext) -> dict:
  """The ``ood`` task: ``ood_benchmark`` of the test split (``ctx.max_test`` examples) against
  ``ctx.ood_sets``, with ``ood_<score>.png`` histograms."""
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
    for i, spec in enumerate(ctx.ood_sets)
  }
  return ood_benchmark(
    ctx.energy_fn, test, sets, ctx.num_classes, histogram_path=ctx.path("ood_{score}.png")
  )
