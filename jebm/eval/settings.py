"""Checks shared by the tasks' settings (``RestoreConfig``, ``StepsConfig``, ``LikelihoodConfig``):
each ValueError starts with the field's name, which ``experiments/evaluate.py`` turns into its
flag (``--<task>_<field>``)."""

import math


def check_int(name: str, value, low: int) -> None:
  """ValueError unless ``value`` is an int (not a bool) >= ``low``."""
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_positive(name: str, value) -> None:
  """ValueError unless ``value`` is a finite number > 0 (not a bool)."""
  if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < math.inf):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
