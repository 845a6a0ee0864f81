"""Metrics against hand-computed cases, scikit-learn and closed forms."""

import numpy as np
import pytest
import scipy.linalg
from sklearn.metrics import roc_auc_score

from jebm import metrics


# --- AUROC --------------------------------------------------------------------------------------


def test_auroc_hand_computed_with_ties():
  # Pairs (in, out): 3 > 1, 3 > 2, 3 > 2; 2 > 1, 2 = 2 (½), 2 = 2 (½); 1 = 1 (½), 1 < 2, 1 < 2.
  # Sum = 3 + 2 + 0.5 = 5.5 over 9 pairs.
  assert metrics.auroc([3.0, 2.0, 1.0], [1.0, 2.0, 2.0]) == pytest.approx(5.5 / 9)


def test_auroc_extremes():
  assert metrics.auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
  assert metrics.auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
  assert metrics.auroc(np.zeros(5), np.zeros(7)) == 0.5
  assert metrics.auroc([np.inf], [-np.inf, 0.0]) == 1.0


def test_auroc_matches_sklearn():
  rng = np.random.default_rng(0)
  s_in = np.round(rng.normal(1.0, 1.0, 300), 1)  # Rounding makes plenty of ties.
  s_out = np.round(rng.normal(0.0, 1.0, 200), 1)
  labels = np.concatenate([np.ones(300), np.zeros(200)])
  expected = roc_auc_score(labels, np.concatenate([s_in, s_out]))
  assert metrics.auroc(s_in, s_out) == pytest.approx(expected, abs=1e-12)


def test_auroc_rejects_nan_and_empty():
  with pytest.raises(ValueError, match="NaN"):
    metrics.auroc([np.nan, 1.0], [0.0])
  with pytest.raises(ValueError, match="non-empty"):
    metrics.auroc([], [0.0])


# --- FID ----------------------------------------------------------------------------------------


def test_frechet_distance_of_identical_sets_is_zero():
  feats = np.random.default_rng(0).normal(size=(500, 16))
  assert abs(metrics.frechet_distance(feats, feats)) < 1e-8


def test_gaussian_frechet_distance_closed_form():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
  cov_a, cov_b = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
  mean_a, mean_b = rng.normal(size=4), rng.normal(size=4)
  expected = (
    np.sum((mean_a - mean_b) ** 2)
    + np.trace(cov_a + cov_b)
    - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b)).real
  )
  got = metrics.gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b)
  assert got == pytest.approx(expected, rel=1e-8)
  # Diagonal case by hand: means differ by (3, 4) -> 25; sqrt-covs (1, 2) vs (2, 1) -> 1 + 1.
  got = metrics.gaussian_frechet_distance([0, 0], np.diag([1.0, 4.0]), [3, 4], np.diag([4.0, 1.0]))
  assert got == pytest.approx(27.0)


def test_frechet_distance_of_two_gaussian_samples_approaches_closed_form():
  rng = np.random.default_rng(2)
  n = 200_000
  a = rng.normal(size=(n, 2)) * [1.0, 2.0]
  b = rng.normal(size=(n, 2)) * [2.0, 1.0] + [3.0, 4.0]
  assert metrics.frechet_distance(a, b) == pytest.approx(27.0, rel=0.01)


def test_frechet_distance_with_fewer_examples_than_dimensions_is_finite():
  rng = np.random.default_rng(3)
  got = metrics.frechet_distance(rng.normal(size=(10, 64)), rng.normal(size=(12, 64)))
  assert np.isfinite(got) and got > 0


def test_frechet_distance_rejects_bad_shapes():
  with pytest.raises(ValueError, match="dimension"):
    metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    metrics.frechet_distance(np.zeros(5), np.zeros((5, 1)))


# --- KID ----------------------------------------------------------------------------------------


def test_kid_same_distribution_is_near_zero_and_shift_is_positive():
  rng = np.random.default_rng(4)
  a, b = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
  mean, std = metrics.kernel_inception_distance(a, b, subset_size=500, num_subsets=20, seed=0)
  assert abs(mean) < 3 * std + 0.02 and std > 0
  shifted, _ = metrics.kernel_inception_distance(a, b + 1.0, subset_size=500, num_subsets=20)
  assert shifted > 10 * (abs(mean) + std)


def test_kid_is_deterministic_given_seed():
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(300, 4)), rng.normal(size=(200, 4)) + 0.5
  first = metrics.kernel_inception_distance(a, b, subset_size=100, num_subsets=5, seed=7)
  assert first == metrics.kernel_inception_distance(a, b, subset_size=100, num_subsets=5, seed=7)


def test_kid_matches_direct_unbiased_mmd_on_full_sets():
  rng = np.random.default_rng(6)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
  k = lambda a, b: (a @ b / 3 + 1) ** 3
  m = 6
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
  mean, std = metrics.kernel_inception_distance(x, y, subset_size=m, num_subsets=3)
  assert mean == pytest.approx(xx + yy - 2 * xy) and std == pytest.approx(0.0, abs=1e-12)


# --- Inception Score ----------------------------------------------------------------------------


def test_inception_score_uniform_is_one():
  mean, std = metrics.inception_score(np.full((100, 10), 0.1), splits=10)
  assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_one_hot_spread_over_classes_is_k():
  k = 7
  probs = np.eye(k)[np.arange(1000 * k) % k]  # Splits are random: 700 draws of each class each.
  mean, std = metrics.inception_score(probs, splits=10)
  assert mean == pytest.approx(k, rel=0.01) and std < 0.05


def test_inception_score_one_hot_single_class_is_one():
  probs = np.eye(5)[np.zeros(50, int)]
  assert metrics.inception_score(probs, splits=5)[0] == pytest.approx(1.0)


def test_inception_score_rejects_non_probabilities():
  with pytest.raises(ValueError, match="probabilities"):
    metrics.inception_score(np.ones((20, 3)), splits=2)
  with pytest.raises(ValueError, match="splits"):
    metrics.inception_score(np.full((3, 3), 1 / 3), splits=10)


def test_inception_score_of_input_sorted_by_class_is_k():
  # Conditional samples arrive sorted by class: contiguous splits would each hold one class (IS 1).
  probs = np.repeat(np.eye(10), 100, axis=0)
  mean, _ = metrics.inception_score(probs, splits=10)
  assert mean > 9.0, mean
  assert metrics.inception_score(probs, splits=10, seed=3)[0] != mean  # other splits, same kind


def test_expected_calibration_error_known_answers():
  labels = np.array([0, 0, 1, 1])
  # Confidence 0.75 everywhere, 3 of 4 right: perfectly calibrated.
  probs = np.array([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.25]])
  assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0)
  # Confidence 0.9, accuracy 0.5: ECE 0.4.
  probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.9, 0.1]])
  assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.4)
  # Two bins: {0.6: right} and {1.0: wrong}: (1/2)|1 - 0.6| + (1/2)|0 - 1| = 0.7.
  probs = np.array([[0.6, 0.4], [1.0, 0.0]])
  assert metrics.expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.7)
  with pytest.raises(ValueError, match="probs"):
    metrics.expected_calibration_error(np.ones(3), labels)


def test_confusion_matrix():
  matrix = metrics.confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 3)
  np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    metrics.confusion_matrix([0, 3], [0, 1], 3)
