"""Energies of training vs test images: a gap between the two hints at overfitting (the paper's
train/test energy histograms)."""

from typing import Optional

import numpy as np

from jebm import viz
from jebm.energy import EnergyFn
from jebm.eval.context import EvalContext
from jebm.eval.energies import min_energy_fn


def energy_histogram_data(
  energy_fn: EnergyFn,
  train_images,
  test_images,
  num_classes: Optional[int] = None,
  *,
  path=None,
  batch_size: Optional[int] = None,
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
  energy = min_energy_fn(energy_fn, num_classes, batch_size=batch_size)
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


def evaluate(ctx: EvalContext) -> dict:
  """The ``histograms`` task: ``energy_histogram_data`` of the test split (``ctx.max_test``
  examples) and as many training examples, with ``energy_histograms.png``."""
  test = ctx.test_split()["image"]
  return energy_histogram_data(
    ctx.energy_fn,
    ctx.split("train", len(test))["image"],
    test,
    ctx.num_classes,
    path=ctx.path("energy_histograms.png"),
  )
