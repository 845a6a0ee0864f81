"""dSprites (Matthey et al. 2017) drawn procedurally: 64 x 64 binary images of one white shape,
generated from its five factors on DeepMind's grid.

    shape        3: square, ellipse, heart
    scale        6: linspace(0.5, 1, 6)
    orientation 40: linspace(0, 2 pi, 40) (radians, counter-clockwise; 0 and 2 pi draw alike)
    position x  32: linspace(0, 1, 32) (left to right)
    position y  32: linspace(0, 1, 32) (top to bottom)

737,280 images in all, in DeepMind's order (shape slowest, position y fastest). The pixels are
not bit-identical to DeepMind's file: each pixel is white when its centre lies inside the shape
(half-size 9 pixels at scale 1, centres from pixel 12 to 51), so sizes and outlines differ a
little. `jebm.data.load("dsprites/deepmind")` reads DeepMind's own ``.npz`` instead.
"""

from typing import Dict

import numpy as np

SIZE = 64
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
FACTOR_SIZES = (len(SHAPES), len(SCALES), len(ORIENTATIONS), len(POSITIONS), len(POSITIONS))
NUM_IMAGES = int(np.prod(FACTOR_SIZES))
HALF_SIZE = 9.0  # pixels, at scale 1
LOW, HIGH = 12.0, 51.0  # pixel range of the shape's centre
_PIXELS = np.arange(SIZE) + 0.5  # pixel centres


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether points (u, v) of the shape's own frame (half-size 1, v up) lie inside it."""
  if shape == "square":
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0
  if shape == "ellipse":
    return u**2 + (v / 0.5) ** 2 <= 1.0
  x, y = 1.15 * u, 1.15 * v + 0.1  # the heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3, centred
  return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


def render(shape: int, scale: float, orientation: float, x: float, y: float) -> np.ndarray:
  """One image, uint8 [64, 64] with values 0 (background) and 255 (the shape).

  Args:
    shape: index into `SHAPES`.
    scale: in [0.5, 1].
    orientation: radians, counter-clockwise.
    x, y: position in [0, 1]: left to right, top to bottom.
  """
  cx, cy = LOW + x * (HIGH - LOW) + 0.5, LOW + y * (HIGH - LOW) + 0.5
  dx, dy = np.meshgrid(_PIXELS - cx, cy - _PIXELS)  # dy: up is positive
  cos, sin = np.cos(orientation), np.sin(orientation)
  u = (cos * dx + sin * dy) / (scale * HALF_SIZE)  # rotate the pixel back by -orientation
  v = (-sin * dx + cos * dy) / (scale * HALF_SIZE)
  return np.where(_inside(SHAPES[shape], u, v), 255, 0).astype(np.uint8)


def latent_classes(index: np.ndarray) -> np.ndarray:
  """Factor indices int32 [N, 5] (shape, scale, orientation, x, y) of grid images ``index`` [N]."""
  return np.stack(np.unravel_index(np.asarray(index), FACTOR_SIZES), axis=-1).astype(np.int32)


def latent_values(classes: np.ndarray) -> np.ndarray:
  """Factor values float32 [N, 5] (shape index, scale, orientation, x, y) of indices [N, 5]."""
  classes = np.asarray(classes)
  return np.stack(
    [
      classes[:, 0].astype(np.float64),
      SCALES[classes[:, 1]],
      ORIENTATIONS[classes[:, 2]],
      POSITIONS[classes[:, 3]],
      POSITIONS[classes[:, 4]],
    ],
    axis=-1,
  ).astype(np.float32)


# The condition vector of each factor model (the paper's dSprites conditions): name -> width.
#   position: (x, y) in [0, 1]; scale: (scale,) in [0.5, 1]; shape: one-hot of 3;
#   rotation: (cos, sin) of the orientation.
CONDITIONS = {"position": 2, "scale": 1, "shape": 3, "rotation": 2}
# The latents_values columns (shape, scale, orientation, x, y) each condition is computed from.
CONDITION_COLUMNS = {"shape": [0], "scale": [1], "rotation": [2], "position": [3, 4]}


def condition_vectors(name: str, latents_values: np.ndarray) -> np.ndarray:
  """The ``name`` condition (a `CONDITIONS` key) of latents_values [..., 5]: float32 [..., width]."""
  if name not in CONDITIONS:
    raise ValueError(f"unknown dSprites condition {name!r}; known: {list(CONDITIONS)}")
  v = np.asarray(latents_values, np.float32)[..., CONDITION_COLUMNS[name]]
  if name == "shape":
    return np.eye(len(SHAPES), dtype=np.float32)[np.rint(v[..., 0]).astype(np.int64)]
  if name == "rotation":
    return np.stack([np.cos(v[..., 0]), np.sin(v[..., 0])], axis=-1).astype(np.float32)
  return v


def nearest_index(latents_values: np.ndarray) -> np.ndarray:
  """Indices [N] of the grid images nearest to latents_values rows [N, 5], factor by factor."""
  grids = (np.arange(len(SHAPES)), SCALES, ORIENTATIONS, POSITIONS, POSITIONS)
  latents = np.asarray(latents_values)
  classes = [np.abs(latents[:, [j]] - grid[None]).argmin(1) for j, grid in enumerate(grids)]
  return np.ravel_multi_index(classes, FACTOR_SIZES)


def images(index: np.ndarray) -> Dict[str, np.ndarray]:
  """Grid images ``index`` [N]: {"image": uint8 [N, 64, 64, 1], "latents_classes": int32 [N, 5],
  "latents_values": float32 [N, 5]}."""
  classes = latent_classes(index)
  values = latent_values(classes)
  drawn = [render(int(c[0]), *v[1:]) for c, v in zip(classes, values)]
  return {
    "image": np.stack(drawn)[..., None],
    "latents_classes": classes,
    "latents_values": values,
  }
