"""Atomic file writes: a reader (or a run killed mid-write) never sees half a file."""

import os
import tempfile
from typing import Callable


def write_atomically(path: str, write: Callable[[str], None]) -> str:
  """Calls ``write(tmp_path)`` on a temporary file beside ``path``, then renames it to ``path``.

  Parent folders are created. Returns ``path``.
  """
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_text(path: str, text: str) -> str:
  """Writes ``text`` to ``path`` atomically."""

  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)

  return write_atomically(path, write)
