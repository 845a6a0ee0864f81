"""Mode coverage and distances to the true density for samples of 2-D toy densities.

Each density of ``experiments/modes.py`` has a fixed set of disjoint mode regions; their union is
its support (``mode_index``):

- ``8gaussians`` (8 modes) and ``far_unequal`` (4 modes): discs of radius 3 std (0.3) around the
  centres of ``jebm.data.toy2d.centers``; the true mass outside them is exp(-4.5) = 1.1%.
- ``rings`` (32 modes): each of the 4 rings is an annulus |r - r_k| <= 2 std (0.16), split into 8
  angular sectors of 45 degrees (sector 0 starts at angle 0); true mass outside: about 4.6%. Not
  3 std as for the points: the rings are only 0.5 apart, and 3-std annuli (0.48 wide) would fill
  96% of the disc of radius 2.24, so that a blob over the disc would look on-support.
- ``checkerboard`` (8 modes): the 8 black unit squares themselves; true mass outside: 0.

A mode is covered when at least ``COVER_FRACTION`` (20%) of its expected share of the samples,
n * weight, falls in its region. All functions take numpy arrays and return Python floats/ints.
"""

import numpy as np

from jebm.data import toy2d

DENSITIES = ("8gaussians", "rings", "checkerboard", "far_unequal")
COVER_FRACTION = 0.2
MODE_RADIUS = 0.3  # 3 std of the point-mode densities
RING_HALF_WIDTH = 0.16  # 2 std of the rings' noise (see above)
RING_SECTORS = 8
MMD_BANDWIDTH = 0.3  # RBF std, the scale of one mode
GRID_BOX = (-4.0, 4.0)  # the sampler's box [x_min, x_max] of the toy2d preset
GRID_BINS = 40  # per axis: cells of 0.2 x 0.2
GRID_FLOOR = 1e-5  # added to every cell's probability before renormalising (KL smoothing)


def _check(name):
  if name not in DENSITIES:
    raise ValueError(f"no mode regions for density {name!r}; known: {DENSITIES}")


def mode_weights(name: str) -> np.ndarray:
  """float64 [M]: the true probability of each mode (summing to 1)."""
  _check(name)
  if name == "far_unequal":
    return np.asarray(toy2d.FAR_UNEQUAL_WEIGHTS, np.float64)
  num = {"8gaussians": 8, "rings": 4 * RING_SECTORS, "checkerboard": 8}[name]
  return np.full(num, 1.0 / num)


def mode_index(name: str, x) -> np.ndarray:
  """int64 [n]: the mode region each point of ``x`` [n, 2] lies in, or -1 off the support."""
  _check(name)
  x = np.asarray(x, np.float64)
  if name in ("8gaussians", "far_unequal"):
    dist = np.linalg.norm(x[:, None, :] - toy2d.centers(name)[None], axis=-1)
    nearest = np.argmin(dist, axis=1)
    return np.where(dist[np.arange(len(x)), nearest] <= MODE_RADIUS, nearest, -1)
  if name == "rings":
    radii = np.asarray(toy2d._RING_RADII)
    r = np.linalg.norm(x, axis=1)
    ring = np.argmin(np.abs(r[:, None] - radii[None]), axis=1)
    angle = np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi)
    sector = np.minimum((angle / (2 * np.pi / RING_SECTORS)).astype(int), RING_SECTORS - 1)
    inside = np.abs(r - radii[ring]) <= RING_HALF_WIDTH
    return np.where(inside, ring * RING_SECTORS + sector, -1)
  # checkerboard: black squares (floor(x) + floor(y) even) of [-2, 2]^2, numbered in order.
  inside_box = np.all((x >= -2) & (x <= 2), axis=1)
  cell = np.clip(np.floor(x), -2, 1).astype(int) + 2  # [n, 2] in 0..3
  black = (cell.sum(axis=1) % 2) == 0
  square = (cell[:, 0] * 4 + cell[:, 1]) // 2  # the 8 black squares of 16 cells -> 0..7
  return np.where(inside_box & black, square, -1)


def mode_coverage(name: str, x) -> dict:
  """Coverage of ``x`` [n, 2]: {"modes_covered", "modes_total", "mass_off_support",
  "mode_fractions" (the fraction of samples in each mode region)}."""
  idx = mode_index(name, x)
  weights = mode_weights(name)
  counts = np.bincount(idx[idx >= 0], minlength=len(weights))
  covered = counts >= COVER_FRACTION * len(idx) * weights
  return {
    "modes_covered": int(covered.sum()),
    "modes_total": len(weights),
    "mass_off_support": float(np.mean(idx < 0)),
    "mode_fractions": (counts / max(len(idx), 1)).round(4).tolist(),
  }


def mmd(x, y, bandwidth: float = MMD_BANDWIDTH) -> float:
  """Squared MMD (biased V-statistic, >= 0, exactly 0 for identical sets) between ``x`` [n, 2]
  and ``y`` [m, 2] under the RBF kernel exp(-|a - b|^2 / (2 bandwidth^2))."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

  def mean_kernel(a, b):
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None] - 2 * a @ b.T
    return np.mean(np.exp(-np.maximum(sq, 0) / (2 * bandwidth**2)))

  return float(max(mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y), 0.0))


def grid_centers() -> np.ndarray:
  """float32 [GRID_BINS**2, 2]: the centres of the KL grid's cells (x-major)."""
  low, high = GRID_BOX
  width = (high - low) / GRID_BINS
  c = low + width * (np.arange(GRID_BINS) + 0.5)
  gx, gy = np.meshgrid(c, c, indexing="ij")
  return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def _smooth(p):
  p = np.asarray(p, np.float64).ravel()
  p = p / p.sum() + GRID_FLOOR
  return p / p.sum()


def grid_histogram(x) -> np.ndarray:
  """float64 [GRID_BINS**2]: the smoothed cell probabilities of samples ``x`` [n, 2] (points
  outside ``GRID_BOX`` count in the nearest edge cell), x-major like ``grid_centers``."""
  low, high = GRID_BOX
  x = np.clip(np.asarray(x, np.float64), low, high - 1e-9)
  edges = np.linspace(low, high, GRID_BINS + 1)
  counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
  return _smooth(counts)


def kl_grid(true_x, model_x) -> float:
  """KL(true || model) between the smoothed grid histograms of true samples [N, 2] and model
  samples [n, 2] (nats)."""
  return kl_cells(grid_histogram(true_x), grid_histogram(model_x))


def density_on_grid(log_density) -> np.ndarray:
  """float64 [GRID_BINS**2]: smoothed cell probabilities of an unnormalised log-density given at
  ``grid_centers()`` (e.g. -E(x) of an EBM), normalised over the grid."""
  log_density = np.asarray(log_density, np.float64).ravel()
  return _smooth(np.exp(log_density - log_density.max()))


def kl_cells(p, q) -> float:
  """KL(p || q) = sum p log(p / q) of two cell distributions (already smoothed)."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  return float(np.sum(p * (np.log(p) - np.log(q))))
