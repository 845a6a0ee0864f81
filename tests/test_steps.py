"""The steps task's diversity measures on cases with known answers, and its settings' errors (the
task itself runs on a tiny checkpoint in test_experiments)."""

import numpy as np
import pytest

from jebm.eval import StepsConfig, distinct_neighbour_fraction, within_class_distance


def test_within_class_distance_averages_over_pairs_of_a_class():
  features = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [9.0, 9.0]])
  # Class 0: one pair at distance 5; class 1: one at 0; class 2 has no pair.
  assert within_class_distance(features, np.array([0, 0, 1, 1, 2])) == pytest.approx(2.5)


def test_distinct_neighbour_fraction_counts_distinct_nearest_training_images():
  pool = np.eye(4, dtype=np.float32).reshape(4, 2, 2, 1)
  samples = pool[[0, 0, 2]] + 0.1
  assert distinct_neighbour_fraction(samples, pool) == pytest.approx(2 / 3)
  assert distinct_neighbour_fraction(pool, pool) == 1.0


@pytest.mark.parametrize(
  "settings, message",
  [
    (dict(lengths=(10, 5)), "lengths must increase"),
    (dict(lengths=(0, 5)), "lengths must be ints >= 1"),
    (dict(num_samples=1), "num_samples must be an int >= 2"),
    (dict(adaptive_tol=0.0), "adaptive_tol must be a finite number > 0"),
  ],
)
def test_bad_settings_are_clear_errors(settings, message):
  with pytest.raises(ValueError, match=message):
    StepsConfig(**settings)
