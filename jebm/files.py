"""Atomic file writes: a reader (or a run killed mid-write) never sees half a file."""

import os
import stat
import uuid
from typing import Callable


def _create_temporary(directory: str, suffix: str, mode: int) -> str:
  """Creates an empty, new file in ``directory`` (permissions ``mode`` less the umask, as
  ``open`` gives) and returns its path."""
  while True:
    path = os.path.join(directory, f".tmp_{uuid.uuid4().hex}{suffix}")
    try:
      os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
      return path
    except FileExistsError:
      continue


def write_atomically(path: str, write: Callable[[str], None]) -> str:
  """Calls ``write(tmp_path)`` on a temporary file beside ``path``, then renames it to ``path``.

  Parent folders are created. A new file gets the permissions that ``open`` would give it (0666
  less the umask); an existing file keeps its own. Returns ``path``.
  """
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  tmp = _create_temporary(directory, os.path.splitext(path)[1], 0o666)
  try:
    if os.path.exists(path):
      os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
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
