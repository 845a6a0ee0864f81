"""2-D toy densities as pure numpy samplers (the data of the `toy2d/*` TFDS configs).

All densities live roughly in the square [-2.5, 2.5]^2:

- ``8gaussians``: an equal mixture of 8 isotropic Gaussians, std 0.1, whose centres lie on the
  circle of radius 2 at angles 2*pi*i/8, i = 0..7 (centre 0 is (2, 0), counter-clockwise).
  The label is the mode index i.
- ``rings``: 4 concentric circles of radii 0.5, 1.0, 1.5, 2.0, each chosen with probability 1/4,
  a uniform angle, plus isotropic Gaussian noise of std 0.08.
- ``checkerboard``: uniform on the 8 "black" unit squares of a 4x4 board covering [-2, 2]^2
  (the squares whose floor(x) + floor(y) is even).
- ``two_moons``: scikit-learn's make_moons geometry (upper arc (cos t, sin t), lower arc
  (1 - cos t, 0.5 - sin t), t ~ U[0, pi]) shifted by (-0.5, -0.25) to centre it and scaled by 1.5,
  plus Gaussian noise of std 0.05.
- ``far_unequal``: a mixture of 4 isotropic Gaussians, std 0.1, at the corners (-2, 2), (2, 2),
  (2, -2), (-2, -2) (4 apart along an edge), with unequal weights 0.6, 0.25, 0.1, 0.05. Not a
  TFDS config: it is sampled directly (``sample``), e.g. by ``experiments/modes.py``.

Labels are the mode index for ``8gaussians`` and ``far_unequal``, and 0 for the others.
"""

import numpy as np

NAMES = ("8gaussians", "rings", "checkerboard", "two_moons")

_GAUSSIANS_RADIUS = 2.0
_GAUSSIANS_STD = 0.1
_RING_RADII = (0.5, 1.0, 1.5, 2.0)
_RING_STD = 0.08
_MOONS_STD = 0.05
_MOONS_SCALE = 1.5
# Densities sampled here but not TFDS configs (``NAMES`` are the configs of ``toy2d/*``).
EXTRA_NAMES = ("far_unequal",)
FAR_UNEQUAL_WEIGHTS = (0.6, 0.25, 0.1, 0.05)
FAR_UNEQUAL_STD = 0.1
_FAR_UNEQUAL_CENTERS = ((-2.0, 2.0), (2.0, 2.0), (2.0, -2.0), (-2.0, -2.0))


def centers(name):
  """Mode centres of a density that has point modes.

  Args:
    name: ``"8gaussians"`` or ``"far_unequal"`` (the densities with point modes).

  Returns:
    float32 [8, 2] for 8gaussians (centre i at radius 2 and angle 2*pi*i/8); float32 [4, 2] for
    far_unequal (its corners, in the order of ``FAR_UNEQUAL_WEIGHTS``).
  """
  if name == "far_unequal":
    return np.asarray(_FAR_UNEQUAL_CENTERS, np.float32)
  if name != "8gaussians":
    raise ValueError(f"centers() is defined for '8gaussians' and 'far_unequal' only, not {name!r}")
  angles = 2 * np.pi * np.arange(8) / 8
  return (_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def sample(name, n, seed):
  """Draws `n` i.i.d. points from a toy density; a pure function of (name, n, seed).

  Args:
    name: one of `NAMES` or `EXTRA_NAMES`.
    n: number of points.
    seed: non-negative int, seeds a numpy PCG64 generator.

  Returns:
    (points, labels): float32 [n, 2] and int32 [n] (mode index for 8gaussians and far_unequal,
    else 0).
  """
  samplers = {
    "8gaussians": _eight_gaussians,
    "rings": _rings,
    "checkerboard": _checkerboard,
    "two_moons": _two_moons,
    "far_unequal": _far_unequal,
  }
  if name not in samplers:
    raise ValueError(f"Unknown toy2d density {name!r}; expected one of {NAMES + EXTRA_NAMES}")
  rng = np.random.default_rng(seed)
  points, labels = samplers[name](rng, int(n))
  return points.astype(np.float32), labels.astype(np.int32)


def _eight_gaussians(rng, n):
  labels = rng.integers(0, 8, size=n)
  points = centers("8gaussians")[labels] + _GAUSSIANS_STD * rng.standard_normal((n, 2))
  return points, labels


def _rings(rng, n):
  radii = np.asarray(_RING_RADII)[rng.integers(0, len(_RING_RADII), size=n)]
  angles = rng.uniform(0, 2 * np.pi, size=n)
  points = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
  return points + _RING_STD * rng.standard_normal((n, 2)), np.zeros(n)


def _checkerboard(rng, n):
  x = rng.uniform(-2, 2, size=n)
  # Rows k in {-2..1} with floor(x) + k even: two per column, pick one at random.
  row = -2 + (np.floor(x).astype(int) % 2) + 2 * rng.integers(0, 2, size=n)
  y = row + rng.uniform(0, 1, size=n)
  return np.stack([x, y], axis=1), np.zeros(n)


def _two_moons(rng, n):
  upper = rng.integers(0, 2, size=n).astype(bool)
  t = rng.uniform(0, np.pi, size=n)
  x = np.where(upper, np.cos(t), 1 - np.cos(t))
  y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
  points = _MOONS_SCALE * (np.stack([x, y], axis=1) - np.array([0.5, 0.25]))
  return points + _MOONS_STD * rng.standard_normal((n, 2)), np.zeros(n)


def _far_unequal(rng, n):
  labels = rng.choice(len(FAR_UNEQUAL_WEIGHTS), size=n, p=FAR_UNEQUAL_WEIGHTS)
  points = centers("far_unequal")[labels] + FAR_UNEQUAL_STD * rng.standard_normal((n, 2))
  return points, labels
