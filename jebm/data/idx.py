"""IDX files (the MNIST format), read with numpy.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type, ``08`` for
unsigned bytes; ``DD`` the number of dimensions), then ``DD`` big-endian uint32 sizes, then the
elements in C order. MNIST images are ``idx3`` (``[N, 28, 28]``), labels ``idx1`` (``[N]``).
Files may be gzip-compressed; compression is detected from the content, not the file name.
"""

import gzip
from pathlib import Path

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


def read_idx(path, *, ndim=None):
  """Reads an unsigned-byte IDX file (plain or gzipped) into a numpy array.

  Args:
    path: file path.
    ndim: expected number of dimensions (3 for images, 1 for labels), or None for any.

  Returns:
    uint8 array of the shape stored in the header, e.g. [N, 28, 28] or [N].

  Raises:
    ValueError: naming the file, when the magic number, the element type, the number of
      dimensions or the payload size is wrong (a corrupt or truncated file).
  """
  path = Path(path)
  raw = path.read_bytes()
  if raw[:2] == _GZIP_MAGIC:
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise ValueError(f"Corrupt gzip IDX file {path}: {e}") from e
  return parse_idx(raw, name=str(path), ndim=ndim)


def parse_idx(raw, *, name="<bytes>", ndim=None):
  """Parses the bytes of an unsigned-byte IDX file; see `read_idx`.

  Args:
    raw: the uncompressed file content (bytes).
    name: used in error messages.
    ndim: expected number of dimensions, or None for any.

  Returns:
    uint8 array of the header's shape.
  """
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(
      f"Corrupt IDX file {name}: bad magic number {raw[:4].hex() or 'empty'} (expected 0000 08 0D)"
    )
  dtype_code, dims = raw[2], raw[3]
  if dtype_code != _UBYTE:
    raise ValueError(
      f"Corrupt or unsupported IDX file {name}: element type 0x{dtype_code:02x},"
      " expected 0x08 (unsigned byte)"
    )
  if ndim is not None and dims != ndim:
    raise ValueError(f"Corrupt IDX file {name}: {dims} dimensions, expected {ndim}")
  header = 4 + 4 * dims
  if len(raw) < header:
    raise ValueError(f"Corrupt IDX file {name}: truncated header")
  shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
  expected = header + int(np.prod(shape, dtype=np.int64))
  if len(raw) != expected:
    raise ValueError(
      f"Corrupt IDX file {name}: {len(raw)} bytes, expected {expected} for shape"
      f" {shape} (truncated or padded)"
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path, array, *, compress=None):
  """Writes a uint8 array as an IDX file (for tests and tiny fixtures).

  Args:
    path: destination; gzip-compressed when `compress` is True, or when it is None and the
      name ends in ``.gz``.
    array: uint8 array of any shape, e.g. [N, 28, 28] images or [N] labels.
    compress: see `path`.

  Returns:
    The path written.
  """
  path = Path(path)
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = bytes([0, 0, _UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
  raw = header + array.tobytes()
  if compress is None:
    compress = path.suffix == ".gz"
  path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
  return path
