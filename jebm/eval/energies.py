"""Energies of many images: E(x), E(x, y) under every class, min_y E(x, y), in chunks.

Energy fns follow ``jebm.energy``: ``energy_fn(x [B, ...], y=None) -> [B]`` with p(x) ∝ exp(-E(x)),
so low energy = likely. Conditional energies take int class ids y [B]. Every function evaluates in
host chunks of ``batch_size`` images (times K classes for conditional energies), so memory stays
bounded for any N, and returns numpy arrays.
"""

from typing import Optional

import jax
import numpy as np

from jebm.energy import EnergyFn, check_energies
from jebm.energy import class_energies as _class_energies
from jebm.eval.batching import map_host_chunks

ENERGY_BATCH = 100


def energy_table(
  energy_fn: EnergyFn, images, num_classes: Optional[int] = None, *, batch_size=ENERGY_BATCH
) -> np.ndarray:
  """E(x) [N] for an unconditional energy (``num_classes`` None), E(x, y) [N, K] for a
  conditional one; images [N, ...] floats."""
  if num_classes is None:
    chunk_fn = jax.jit(lambda x: check_energies(energy_fn(x), x))
  else:
    chunk_fn = jax.jit(lambda x: _class_energies(energy_fn, x, num_classes))
  return map_host_chunks(chunk_fn, np.asarray(images, np.float32), batch_size=batch_size)


def class_energies(
  energy_fn: EnergyFn, images, num_classes: int, *, batch_size: int = ENERGY_BATCH
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
  return energy_table(energy_fn, images, num_classes, batch_size=batch_size)


def min_energy(
  energy_fn: EnergyFn, images, num_classes: Optional[int] = None, *, batch_size: int = ENERGY_BATCH
) -> np.ndarray:
  """E(x) for an unconditional energy, min_y E(x, y) for a conditional one.

  Args:
    energy_fn: ``energy_fn(x [B, ...], y=None) -> [B]``.
    images: [N, ...] floats.
    num_classes: None (unconditional) or K (conditional on class ids 0..K-1).
    batch_size: images per chunk.

  Returns:
    float32 numpy [N] energies (low = likely).
  """
  table = energy_table(energy_fn, images, num_classes, batch_size=batch_size)
  return table if num_classes is None else table.min(axis=1)
