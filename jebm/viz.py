"""Pictures for humans: image grids, the "chain start | sample | real" strip, energy histograms,
confusion matrices.

Everything returns or writes uint8 images; PNGs are written atomically (a temp file in the same
directory, then ``os.replace``), so a reader never sees half a file. Matplotlib is used only through
its object-oriented API with the Agg canvas: no pyplot state, no display needed.
"""

import numpy as np

from jebm.files import write_atomically
from PIL import Image


def to_uint8(images) -> np.ndarray:
  """Images as uint8: floats are taken to be in [0, 1] (clipped, scaled by 255 and rounded);
  integer images are clipped to 0..255. Any shape."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  if np.issubdtype(images.dtype, np.integer) or images.dtype == bool:
    return np.clip(images, 0, 255).astype(np.uint8)
  return np.round(np.clip(np.nan_to_num(images), 0.0, 1.0) * 255.0).astype(np.uint8)


def _as_nhwc(images, name="images"):
  images = np.asarray(images)
  if images.ndim == 3:  # [N, H, W] grey images.
    images = images[..., None]
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(
      f"{name} must have shape [N, H, W, C] (or [N, H, W]) with N >= 1, got shape {images.shape}"
    )
  return images


def image_grid(images, *, ncol=None, pad=1, pad_value=0.5) -> np.ndarray:
  """Tiles a batch of images into one image, row by row.

  Args:
    images: [N, H, W, C] (or [N, H, W]) floats in [0, 1] or uint8.
    ncol: images per row; default ceil(sqrt(N)).
    pad: pixels of padding between images and around the border.
    pad_value: padding intensity in [0, 1] (grey by default, visible on black and white images).

  Returns:
    uint8 [rows * (H + pad) + pad, ncol * (W + pad) + pad, C]; C = 1 stays one grey channel.
  """
  images = to_uint8(_as_nhwc(images))
  n, h, w, c = images.shape
  ncol = int(np.ceil(np.sqrt(n))) if ncol is None else int(ncol)
  if ncol < 1 or pad < 0:
    raise ValueError(f"image_grid needs ncol >= 1 and pad >= 0, got ncol={ncol}, pad={pad}")
  ncol = min(ncol, n)
  nrow = -(-n // ncol)
  fill = to_uint8(np.float32(pad_value))
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), fill, np.uint8)
  for i in range(n):
    top, left = pad + (i // ncol) * (h + pad), pad + (i % ncol) * (w + pad)
    grid[top : top + h, left : left + w] = images[i]
  return grid


def preview_grid(images, labels=None, *, max_per_row=20, max_rows=20) -> np.ndarray:
  """A grid a screen can show, whatever the number of images: with labels, one row per class
  holding its first ``max_per_row`` images (first ``max_rows`` classes); without, the first
  ``max_per_row * max_rows`` images in a square-ish grid.

  Args:
    images: [N, H, W, C] (or [N, H, W]) floats in [0, 1] or uint8.
    labels: optional int [N] class of each image (-1 = none: treated as unlabelled).
    max_per_row, max_rows: the grid's size limits in images (>= 1).

  Returns:
    uint8 grid as ``image_grid``'s; at most max_rows x max_per_row images.
  """
  if max_per_row < 1 or max_rows < 1:
    raise ValueError(
      f"preview_grid needs max_per_row, max_rows >= 1, got {max_per_row}, {max_rows}"
    )
  images = _as_nhwc(images)
  if labels is None or np.all(np.asarray(labels) < 0):
    shown = images[: max_per_row * max_rows]
    return image_grid(shown, ncol=min(max_per_row, int(np.ceil(np.sqrt(len(shown))))))
  labels = np.asarray(labels)
  classes = np.unique(labels)[:max_rows]
  per_row = min(max_per_row, max(int(np.sum(labels == c)) for c in classes))
  blank = np.zeros((1,) + images.shape[1:], images.dtype)
  rows = []
  for c in classes:
    row = images[labels == c][:per_row]
    rows.append(np.concatenate([row] + [blank] * (per_row - len(row))))
  return image_grid(np.concatenate(rows), ncol=per_row)


def _to_channels(image, c):
  return np.repeat(image, c, axis=-1) if image.shape[-1] == 1 and c > 1 else image


def hstack_images(images, *, gap=4, pad_value=1.0) -> np.ndarray:
  """Places uint8 images [H_i, W_i, C_i] side by side, top-aligned, ``gap`` pixels apart.

  Shorter images are padded at the bottom; grey (C = 1) images are repeated to the largest C.

  Returns:
    uint8 [max H_i, sum W_i + gap * (n - 1), max C_i].
  """
  c = max(im.shape[-1] for im in images)
  height = max(im.shape[0] for im in images)
  fill = to_uint8(np.float32(pad_value))
  parts = []
  for i, im in enumerate(images):
    im = _to_channels(im, c)
    if i:
      parts.append(np.full((height, gap, c), fill, np.uint8))
    parts.append(np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0)), constant_values=fill))
  return np.concatenate(parts, axis=1)


def rows_grid(columns, *, rows_per_block=8, pad=1, gap=4) -> np.ndarray:
  """Examples as rows, one column per array: row i is columns[0][i] | columns[1][i] | ...
  (e.g. corrupted | restored | truth); every ``rows_per_block`` rows start a new block, placed
  to the right of the last.

  Args:
    columns: a sequence of J arrays [N, H, W, C] (or [N, H, W]) of one N and image shape, floats
      in [0, 1] or uint8.
    rows_per_block: rows per block (>= 1).
    pad: padding inside each block (see `image_grid`); gap: white pixels between blocks.

  Returns:
    uint8 [H', W', C].
  """
  arrays = [to_uint8(_as_nhwc(c, "columns")) for c in columns]
  if not arrays or len({a.shape for a in arrays}) != 1 or rows_per_block < 1:
    raise ValueError(
      f"rows_grid needs one or more columns of one shape and rows_per_block >= 1, got shapes "
      f"{[a.shape for a in arrays]} and rows_per_block={rows_per_block}"
    )
  interleaved = np.stack(arrays, axis=1)  # [N, J, H, W, C]
  blocks = [
    image_grid(
      interleaved[s : s + rows_per_block].reshape((-1,) + arrays[0].shape[1:]),
      ncol=len(arrays),
      pad=pad,
    )
    for s in range(0, len(interleaved), rows_per_block)
  ]
  return hstack_images(blocks, gap=gap)


def chain_grid(starts, samples, reals, *, ncol=None, pad=1, gap=4) -> np.ndarray:
  """The training picture: chain starts | Langevin samples | real data, as one uint8 image.

  Args:
    starts: [N, H, W, C] chain starts (replay buffer or noise), floats in [0, 1] or uint8.
    samples: [N, H, W, C] the chains after Langevin dynamics.
    reals: [M, H, W, C] real images, for comparison.
    ncol: images per row in each panel; default ceil(sqrt(N)).
    pad: padding inside each panel (see `image_grid`).
    gap: white pixels between the panels.

  Returns:
    uint8 [H', W', C] with the three panels side by side (panels of different heights are
    top-aligned).
  """
  ncol = int(np.ceil(np.sqrt(_as_nhwc(samples, "samples").shape[0]))) if ncol is None else ncol
  grids = [
    image_grid(_as_nhwc(a, name), ncol=ncol, pad=pad)
    for a, name in ((starts, "starts"), (samples, "samples"), (reals, "reals"))
  ]
  return hstack_images(grids, gap=gap)


def readable_scale(height: int, target: int = 32) -> int:
  """The integer enlargement that shows images of ``height`` pixels at least ~target pixels tall."""
  return max(1, target // height)


def save_png(path, image, *, scale: int = 1) -> str:
  """Writes one image as a PNG, atomically, creating parent directories.

  Args:
    path: destination file.
    image: uint8 (or float in [0, 1]) [H, W], [H, W, 1] (saved grey), [H, W, 3] or [H, W, 4].
    scale: nearest-neighbour enlargement factor (e.g. 4 makes 8x8 digits readable).

  Returns:
    ``path`` as a str.
  """
  image = to_uint8(image).repeat(scale, axis=0).repeat(scale, axis=1)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
    raise ValueError(f"save_png needs [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}")
  pil = Image.fromarray(image)
  return write_atomically(path, lambda tmp: pil.save(tmp, format="PNG"))


def _figure(width=6, height=4):
  from matplotlib.figure import Figure  # Object-oriented API: renders with Agg, no pyplot.

  return Figure(figsize=(width, height), dpi=100)


def _save_figure(path, fig) -> str:
  fig.tight_layout()
  return write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))


def save_histograms(path, named_values, title="", *, bins=50, xlabel="energy") -> str:
  """Overlaid histograms (shared bins, densities) of a few sets of values, saved as a PNG.

  Args:
    path: destination PNG (written atomically, parent directories created).
    named_values: dict name -> array of values (any shape, flattened; non-finite values are
      dropped and counted in the legend).
    title: figure title.
    bins: number of shared bins.
    xlabel: label of the x axis.

  Returns:
    ``path`` as a str.
  """
  if not named_values:
    raise ValueError("save_histograms needs at least one named set of values")
  values = {k: np.asarray(v, np.float64).reshape(-1) for k, v in named_values.items()}
  finite = {k: v[np.isfinite(v)] for k, v in values.items()}
  pooled = np.concatenate(list(finite.values()))
  edges = np.histogram_bin_edges(pooled if pooled.size else np.zeros(1), bins=bins)
  fig = _figure()
  ax = fig.add_subplot()
  for name, v in finite.items():
    dropped = values[name].size - v.size
    label = f"{name} (n={v.size}" + (f", {dropped} non-finite)" if dropped else ")")
    ax.hist(v, bins=edges, density=bool(v.size), alpha=0.5, label=label)
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density")
  ax.legend()
  return _save_figure(path, fig)


def save_confusion_matrix(path, matrix, *, title="", class_names=None) -> str:
  """A confusion matrix as a PNG: rows = true class, columns = predicted, shaded by the fraction
  of each row, with the counts written in the cells (for up to 20 classes).

  Args:
    path: destination PNG (written atomically, parent directories created).
    matrix: [K, K] counts.
    title: figure title.
    class_names: K tick labels (default 0..K-1).

  Returns:
    ``path`` as a str.
  """
  matrix = np.asarray(matrix)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
    raise ValueError(f"save_confusion_matrix needs a [K, K] matrix, got shape {matrix.shape}")
  k = matrix.shape[0]
  rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  fig = _figure(6, 5.5)
  ax = fig.add_subplot()
  shaded = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
  fig.colorbar(shaded, ax=ax, label="fraction of the true class")
  if k <= 20:
    names = [str(i) for i in range(k)] if class_names is None else list(class_names)
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    for (i, j), count in np.ndenumerate(matrix):
      color = "white" if rows[i, j] > 0.5 else "black"
      ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title, fontsize=9)
  return _save_figure(path, fig)


def save_curves(
  path, named_curves, *, title="", xlabel="", ylabel="", ylim=None, log_x=False
) -> str:
  """Line plots of a few curves in one panel, saved as a PNG.

  Args:
    path: destination PNG (written atomically, parent directories created).
    named_curves: dict name -> (xs, ys), two sequences of equal length.
    title, xlabel, ylabel: the figure's texts.
    ylim: optional (low, high) of the y axis.
    log_x: a logarithmic x axis.

  Returns:
    ``path`` as a str.
  """
  if not named_curves:
    raise ValueError("save_curves needs at least one named curve")
  fig = _figure()
  ax = fig.add_subplot()
  for name, (xs, ys) in named_curves.items():
    if len(xs) != len(ys):
      raise ValueError(f"curve {name!r} has {len(xs)} x values but {len(ys)} y values")
    ax.plot(xs, ys, marker="o", label=name)
  ax.set_title(title, fontsize=9)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if ylim is not None:
    ax.set_ylim(*ylim)
  if log_x:
    ax.set_xscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save_figure(path, fig)
