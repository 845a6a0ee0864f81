"""Energies of many images: E(x), E(x, y) under every class, min_y E(x, y), in chunks.

Energy fns follow ``jebm.energy``: ``energy_fn(x [B, ...], y=None) -> [B]`` with p(x) ∝ exp(-E(x)),
so low energy = likely. Conditional energies take int class ids y [B]. Every function evaluates in
host chunks of ``chunk_size(num_classes)`` images, so memory stays bounded for any N and any
number of classes, and returns numpy arrays.
"""

from typing import Callable, Optional

import jax
import numpy as np

from jebm.energy import EnergyFn, check_energies, class_energy_table
from jebm.eval.batching import map_host_chunks

EXAMPLES_PER_CHUNK = 1000  # energy evaluations per compiled call: images x classes


def chunk_size(num_classes: Optional[int] = None) -> int:
  """Images per chunk: ``EXAMPLES_PER_CHUNK`` energy evaluations (at least one image)."""
  return max(1, EXAMPLES_PER_CHUNK // (num_classes or 1))


def energy_table_fn(
  energy_fn: EnergyFn, num_classes: Optional[int] = None, *, batch_size: Optional[int] = None
) -> Callable[[np.ndarray], np.ndarray]:
  """A function images [N, ...] floats -> E(x) [N] (unconditional, ``num_classes`` None) or
  E(x, y) [N, K] (conditional), compiled once for any number of calls and any N.

  ``batch_size``: images per chunk (default ``chunk_size(num_classes)``).
  """
  if num_classes is None:
    chunk_fn = jax.jit(lambda x: check_energies(energy_fn(x), x))
  else:
    chunk_fn = jax.jit(lambda x: class_energy_table(energy_fn, x, num_classes))
  size = batch_size or chunk_size(num_classes)
  return lambda images: map_host_chunks(chunk_fn, np.asarray(images, np.float32), batch_size=size)


def class_energies(
  energy_fn: EnergyFn, images, num_classes: int, *, batch_size: Optional[int] = None
) -> np.ndarray:
  """E(x, y) of every image under every class.

  Args:
    energy_fn: conditional energy fn, ``energy_fn(x [B, ...], y int [B]) -> [B]``.
    images: [N, ...] floats.
    num_classes: K; classes are the ids 0..K-1.
    batch_size: images per chunk (each chunk evaluates K * batch_size examples).

  Returns:
    float32 numpy [N, K].
  """
  return energy_table_fn(energy_fn, num_classes, batch_size=batch_size)(images)


def min_energy_fn(
  energy_fn: EnergyFn, num_classes: Optional[int] = None, *, batch_size: Optional[int] = None
) -> Callable[[np.ndarray], np.ndarray]:
  """A function images [N, ...] -> E(x) [N] (unconditional) or min_y E(x, y) [N], compiled once."""
  table = energy_table_fn(energy_fn, num_classes, batch_size=batch_size)
  return table if num_classes is None else (lambda images: table(images).min(axis=1))


def min_energy(
  energy_fn: EnergyFn, images, num_classes: Optional[int] = None, *, batch_size=None
) -> np.ndarray:
  """E(x) for an unconditional energy, min_y E(x, y) for a conditional one.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]``.
    images: [N, ...] floats.
    num_classes: None (unconditional) or K (conditional on class ids 0..K-1).
    batch_size: images per chunk (default ``chunk_size(num_classes)``).

  Returns:
    float32 numpy [N] energies (low = likely).
  """
  return min_energy_fn(energy_fn, num_classes, batch_size=batch_size)(images)
