"""The conditional EBM as a classifier: predicted label = argmin_y E(x, y), and how well
calibrated p(y | x) = softmax_y(-E(x, y)) is.

    report = classification_report(energy_fn, test_images, test_labels, num_classes=10)
    report["accuracy"], report["expected_calibration_error"]

A model trained with a tempered cross-entropy term (``ce_temperature`` T) has energy gaps of the
order of T, so softmax(-E) is nearly uniform and badly calibrated by construction; the task then
also reports the calibration of softmax(-E / T) (``report["at_ce_temperature"]``).
"""

from typing import Optional

import numpy as np
import scipy.special

from jebm import metrics, viz
from jebm.energy import EnergyFn
from jebm.eval.context import EvalContext
from jebm.eval.energies import class_energies
from jebm.eval.judge import judge_accuracy


def classification_report(
  energy_fn: EnergyFn,
  images,
  labels,
  num_classes: int,
  *,
  batch_size: Optional[int] = None,
  num_bins: int = 15,
  ce_temperature: Optional[float] = None,
) -> dict:
  """Accuracy, calibration and confusion of argmin_y E(x, y).

  Args:
    energy_fn: conditional energy fn, ``energy_fn(x [B, ...], y int [B]) -> [B]``.
    images: [N, ...] floats (e.g. test images in [0, 1]).
    labels: [N] true class ids in 0..K-1.
    num_classes: K.
    batch_size: images per chunk (K * batch_size energy evaluations at a time; default
      ``jebm.eval.energies.chunk_size(K)``).
    num_bins: confidence bins of the expected calibration error.
    ce_temperature: if given (the T of a model trained with the CE term), also the calibration
      of softmax(-E / T).

  Returns:
    ``{"accuracy", "expected_calibration_error", "nll": float (of softmax(-E)), "num_examples":
    int, "per_class_accuracy": [K] floats (None for a class without examples),
    "confusion_matrix": [K][K] counts, row = true class, column = predicted}``, plus
    ``"at_ce_temperature": {"temperature", "expected_calibration_error", "nll"}`` with
    ``ce_temperature``.
  """
  labels = np.asarray(labels).reshape(-1)
  if len(labels) != len(images):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
  energies = class_energies(energy_fn, images, num_classes, batch_size=batch_size)
  predicted = energies.argmin(axis=1)
  confusion = metrics.confusion_matrix(labels, predicted, num_classes)
  per_class = [float(row[k] / row.sum()) if row.sum() else None for k, row in enumerate(confusion)]
  report = {
    "accuracy": float(np.mean(predicted == labels)),
    **calibration(energies, labels, num_bins=num_bins),
    "num_examples": int(len(labels)),
    "per_class_accuracy": per_class,
    "confusion_matrix": confusion.tolist(),
  }
  if ce_temperature is not None:
    report["at_ce_temperature"] = {
      "temperature": ce_temperature,
      **calibration(energies, labels, ce_temperature, num_bins=num_bins),
    }
  return report


def calibration(energies, labels, temperature: float = 1.0, *, num_bins: int = 15) -> dict:
  """``{"expected_calibration_error", "nll"}`` of p(y | x) = softmax_y(-E(x, y) / temperature).

  Args:
    energies: [N, K] energies of every class; labels: [N] true class ids.
  """
  log_probs = scipy.special.log_softmax(-np.asarray(energies, np.float64) / temperature, axis=1)
  labels = np.asarray(labels).reshape(-1)
  return {
    "expected_calibration_error": metrics.expected_calibration_error(
      np.exp(log_probs), labels, num_bins=num_bins
    ),
    "nll": float(-np.mean(log_probs[np.arange(len(labels)), labels])),
  }


def evaluate(ctx: EvalContext) -> dict:
  """The ``classify`` task: the report on the test split (``ctx.max_test`` examples, default all),
  ``confusion_matrix.png``, and as a baseline "baseline_judge_accuracy": the accuracy on the same
  examples of the judge, a supervised convnet trained with cross-entropy on the same data. A
  model trained with the cross-entropy term also gets the calibration at its ce_temperature."""
  if ctx.num_classes is None:
    raise ValueError(
      "the classify task needs a conditional model (num_classes > 0); this checkpoint is "
      f"unconditional (dataset {ctx.config.dataset!r}, num_classes=0)"
    )
  test = ctx.test_split()
  temperature = ctx.config.ce_temperature if ctx.config.ce_coeff > 0 else None
  report = classification_report(
    ctx.energy_fn, test["image"], test["label"], ctx.num_classes, ce_temperature=temperature
  )
  if ctx.has_judge:
    report["baseline_judge_accuracy"] = judge_accuracy(ctx.judge()[0], test["image"], test["label"])
  report["confusion_png"] = viz.save_confusion_matrix(
    ctx.path("confusion_matrix.png"),
    np.asarray(report["confusion_matrix"]),
    title=f"argmin_y E(x, y) on {ctx.config.dataset} test: accuracy {report['accuracy']:.4f}",
  )
  return report
