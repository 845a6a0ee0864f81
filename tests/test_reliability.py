"""Reliability: damaged checkpoints fall back to the previous good one, killed runs resume to the
same bits, written files get the user's permissions, and nothing on a load path unpickles or
evaluates data."""

import ast
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import trainer
from experiments.configs import presets
from jebm import checkpoint, files, viz

ROOT = Path(__file__).resolve().parents[1]

# --- Damaged checkpoints -------------------------------------------------------------------------

# Each damages one step's folder as a full disk, a copy cut short or a failing disk might. Orbax's
# OCDBT store keeps stale versions of its b-tree beside the live one, and values under 1 KiB inside
# b-tree nodes, so damage to one arbitrary data file may leave every value that is read intact (the
# checksums then show that the restored state is the saved one): the data kinds hit every file.
CORRUPTIONS = {
  "deleted_data_files": lambda d: [p.unlink() for p in _data_files(d)],
  "truncated_data_files": lambda d: [os.truncate(p, p.stat().st_size // 2) for p in _data_files(d)],
  "garbled_data_files": lambda d: [_garble(p) for p in _data_files(d)],
  "deleted_manifest": lambda d: (d / "state" / "manifest.ocdbt").unlink(),
  "garbled_array_metadata": lambda d: _garble(d / "state" / "_METADATA"),
  "wrong_checksum": lambda d: _wrong_checksum(d),
  "deleted_config": lambda d: shutil.rmtree(d / "config"),
  "garbled_config": lambda d: _garble(d / "config" / "metadata"),
  "empty_dir": lambda d: (shutil.rmtree(d), d.mkdir()),
}
TINY = dataclasses.replace(
  presets.PRESETS["default"],
  features=(4, 8),
  langevin_steps=2,
  batch_size=16,
  buffer_capacity=128,
  num_steps=2 * (len(CORRUPTIONS) + 1),
  checkpoint_every=2,
  keep_checkpoints=len(CORRUPTIONS) + 1,
  log_every=2,
  sample_every=100,
  ema_decay=0.9,  # the parameter average must come back with the same bits too
)
NEWEST = TINY.num_steps


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  """A tiny digits run on 2 devices, a checkpoint every 2 steps, all kept."""
  workdir = tmp_path_factory.mktemp("run") / "w"
  trainer.train_and_evaluate(TINY, str(workdir), data_dir=str(data_dir))
  assert checkpoint.steps(str(workdir)) == list(range(2, NEWEST + 1, 2))
  return workdir


def _data_files(step_dir: Path) -> list:
  """The files that hold the arrays' bytes (orbax's OCDBT data and b-tree files)."""
  return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _garble(path: Path) -> None:
  """Flips every 97th byte."""
  data = np.frombuffer(path.read_bytes(), np.uint8).copy()
  data[::97] ^= 0xFF
  path.write_bytes(data.tobytes())


def _wrong_checksum(step_dir: Path) -> None:
  """A garbled value that orbax reads back without complaint: only the checksum can tell."""
  path = step_dir / "_CHECKPOINT_METADATA"
  meta = json.loads(path.read_text())
  crcs = meta["custom_metadata"][checkpoint._CHECKSUMS]
  key = next(k for k in crcs if "params" in k)
  crcs[key] ^= 1
  path.write_text(json.dumps(meta))


def _copy(trained, tmp_path) -> Path:
  shutil.copytree(trained, tmp_path / "w")
  return tmp_path / "w"


def _leaves(state):
  state = state.replace(rng=jax.random.key_data(state.rng))
  return jax.tree.leaves(jax.device_get(state))


def _assert_same_state(a, b):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _damaged_warnings(records):
  return [r.getMessage() for r in records if "is damaged" in r.getMessage()]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
  kind, trained, tmp_path, caplog, capfd
):
  workdir = _copy(trained, tmp_path)
  bad_dir = workdir / "checkpoints" / str(NEWEST)
  CORRUPTIONS[kind](bad_dir)
  with caplog.at_level(logging.WARNING):
    state, config = checkpoint.restore(str(workdir))
  assert int(state.step) == NEWEST - 2 and config == checkpoint.load_config(str(trained))
  _assert_same_state(state, checkpoint.restore(str(trained), NEWEST - 2)[0])
  (warning,) = _damaged_warnings(caplog.records)
  assert str(bad_dir) in warning
  with pytest.raises(checkpoint.CorruptCheckpointError, match=re.escape(str(bad_dir))):
    checkpoint.restore(str(workdir), NEWEST)  # an explicit step does not fall back
  assert bad_dir.exists()  # readers move nothing
  assert "Traceback" not in capfd.readouterr().err  # orbax's leftover reads print nothing


def test_training_resumes_after_falling_back_over_every_kind_of_damage(
  trained, data_dir, tmp_path, caplog
):
  """The newest checkpoints damaged, one kind each: the run resumes from the oldest, moves the
  damaged ones aside as it saves their steps again, and ends with the same bits, although it
  resumes reading its batches through grain (the run was trained with the in-memory loader)."""
  workdir = _copy(trained, tmp_path)
  bad = {NEWEST - 2 * i: kind for i, kind in enumerate(CORRUPTIONS)}
  for step, kind in bad.items():
    CORRUPTIONS[kind](workdir / "checkpoints" / str(step))
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(TINY, str(workdir), data_dir=str(data_dir), loader="grain")
  damaged = _damaged_warnings(caplog.records)
  for step in bad:
    assert any(f"checkpoints/{step} is damaged" in w for w in damaged), (step, damaged)
    assert sum(f"checkpoints/{step} aside" in r.getMessage() for r in caplog.records) == 1
  moved = sorted(int(p.name.split("_")[0]) for p in (workdir / checkpoint.CORRUPT_DIR).iterdir())
  assert moved == sorted(bad)  # kept, not deleted
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    resumed, _ = checkpoint.restore(str(workdir))
  assert int(resumed.step) == NEWEST and not _damaged_warnings(caplog.records)
  _assert_same_state(resumed, checkpoint.restore(str(trained))[0])  # re-trained to the same bits


def test_every_checkpoint_damaged_is_a_clear_error(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  for step in checkpoint.steps(str(workdir)):
    shutil.rmtree(workdir / "checkpoints" / str(step) / "config")
  for read in (checkpoint.restore, checkpoint.load_config):
    with pytest.raises(checkpoint.CorruptCheckpointError) as error:
      read(str(workdir))
    message = str(error.value)
    assert str(workdir / "checkpoints") in message and "--workdir" in message
    assert all(f"step {s}:" in message for s in range(2, NEWEST + 1, 2))
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no orbax traceback
  with pytest.raises(FileNotFoundError, match="train one first"):
    checkpoint.restore(str(tmp_path / "nothing"))


def test_unfinished_writes_are_ignored_and_cleaned_by_the_writer(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  tmp = workdir / "checkpoints" / f"{NEWEST + 2}.orbax-checkpoint-tmp"
  shutil.copytree(workdir / "checkpoints" / str(NEWEST), tmp)  # as a kill mid-write leaves it
  (tmp / "_CHECKPOINT_METADATA").unlink()
  assert checkpoint.latest_step(str(workdir)) == NEWEST
  assert int(checkpoint.restore(str(workdir))[0].step) == NEWEST and tmp.exists()
  checkpoint.manager(str(workdir)).close()  # the writer's manager deletes it (in a thread)
  deadline = time.time() + 30
  while tmp.exists() and time.time() < deadline:
    time.sleep(0.05)
  assert not tmp.exists() and checkpoint.steps(str(workdir)) == list(range(2, NEWEST + 1, 2))


def test_non_finite_values_are_damage(trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  state, config = checkpoint.restore(str(workdir))
  params = jax.tree.map(lambda p: p.at[..., 0].set(np.nan), state.params)
  with checkpoint.manager(str(workdir), keep=100) as mngr:
    checkpoint.save(mngr, state.replace(step=state.step + 2, params=params), config)
    mngr.wait_until_finished()
  with caplog.at_level(logging.WARNING):
    assert int(checkpoint.restore(str(workdir))[0].step) == NEWEST
  (warning,) = _damaged_warnings(caplog.records)
  assert f"checkpoints/{NEWEST + 2} is damaged" in warning and "NaN or infinite" in warning


# --- Kill torture --------------------------------------------------------------------------------


def test_kill_torture_survives_two_kills_bit_exactly(tmp_path, data_dir, trained):
  del trained  # prepared the data
  result = subprocess.run(
    [
      sys.executable,
      str(ROOT / "tests" / "reliability" / "kill_torture.py"),
      "--kills=2",
      f"--root={tmp_path}",
      f"--data_dir={data_dir}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  lines = result.stdout.strip().splitlines()
  assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
  assert lines[-1] == "survived 2/2, parameters identical: true", result.stdout[-3000:]


# --- File modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_users_permissions(tmp_path, umask, mode):
  old = os.umask(umask)
  try:
    paths = [
      files.write_text(tmp_path / "r.json", "{}"),
      viz.save_png(tmp_path / "p.png", np.zeros((4, 4), np.uint8)),
      files.write_atomically(tmp_path / "s.npz", lambda tmp: np.savez(tmp, a=np.zeros(2))),
    ]
  finally:
    os.umask(old)
  for path in paths:
    assert os.stat(path).st_mode & 0o777 == mode, path
  assert sorted(os.listdir(tmp_path)) == ["p.png", "r.json", "s.npz"]  # no temporary left
  os.chmod(paths[0], 0o640)  # an existing file keeps its mode, as with open(path, "w")
  files.write_text(paths[0], "[]")
  assert os.stat(paths[0]).st_mode & 0o777 == 0o640


# --- Nothing on a load path unpickles or evaluates data ------------------------------------------

FORBIDDEN = {
  "pickle-like deserialiser": r"\b(c?[pP]ickle|cloudpickle|dill|joblib|marshal|shelve)\b",
  "eval/exec/compile": r"(?<![\w.])(eval|exec|compile)\s*\(",
  "unsafe yaml load": r"\byaml\.(?!safe_load\b)\w*load\w*\s*\(",
  "torch.load": r"\btorch\.load\b",
  "allow_pickle=True": r"\ballow_pickle\s*=\s*(True|1)\b",
}
IMPORTS = (
  r"\b__import__\b|\bimport_module\s*\(|\bexec_module\s*\(|\brunpy\b|spec_from_file_location"
)
NP_LOAD = r"\b(np|numpy|onp|jnp)\.load\s*\("
# The one place that imports code by name: the user's own --feature_fn module.
ALLOWED_IMPORTS = {("jebm/eval/features.py", "_import_module")}


def _code_only(source: str) -> str:
  """``source`` with strings and comments blanked out (line and column positions kept)."""
  lines = [list(line) for line in source.splitlines(keepends=True)]
  blank = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", -1)}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type in blank:
      (r0, c0), (r1, c1) = tok.start, tok.end
      for r in range(r0, r1 + 1):
        row = lines[r - 1]
        for c in range(c0 if r == r0 else 0, c1 if r == r1 else len(row)):
          row[c] = " " if row[c] != "\n" else "\n"
  return "".join("".join(line) for line in lines)


def _allowed_lines(source: str, rel: str) -> set:
  names = {name for path, name in ALLOWED_IMPORTS if path == rel}
  return {
    line
    for node in ast.walk(ast.parse(source))
    if isinstance(node, ast.FunctionDef) and node.name in names
    for line in range(node.lineno, node.end_lineno + 1)
  }


def _call_text(code: str, open_paren: int) -> str:
  depth = 0
  for i in range(open_paren, len(code)):
    depth += {"(": 1, ")": -1}.get(code[i], 0)
    if depth == 0:
      return code[open_paren : i + 1]
  return code[open_paren:]


def scan(root: Path, rel: str) -> list:
  """Findings ``"file:line: what: code"`` in the Python file ``root/rel``."""
  source = (root / rel).read_text()
  code = _code_only(source)
  lines, allowed = code.splitlines(), _allowed_lines(source, rel)
  found = []
  for n, line in enumerate(lines, 1):
    what = [w for w, pattern in FORBIDDEN.items() if re.search(pattern, line)]
    if re.search(IMPORTS, line) and n not in allowed:
      what.append("import of code by name")
    found += [f"{rel}:{n}: {w}: {source.splitlines()[n - 1].strip()}" for w in what]
  for match in re.finditer(NP_LOAD, code):
    if not re.search(r"\ballow_pickle\s*=\s*False\b", _call_text(code, match.end() - 1)):
      n = code.count("\n", 0, match.start()) + 1
      found.append(f"{rel}:{n}: np.load without allow_pickle=False: {lines[n - 1].strip()}")
  return found


def test_no_load_path_unpickles_or_evaluates_data():
  sources = sorted(
    str(p.relative_to(ROOT)) for d in ("jebm", "experiments") for p in (ROOT / d).rglob("*.py")
  )
  assert len(sources) > 20 and "jebm/eval/features.py" in sources
  findings = [f for rel in sources for f in scan(ROOT, rel)]
  assert not findings, "\n".join(findings)


def test_the_scanner_finds_what_it_looks_for(tmp_path):
  bad = """\"\"\"Mentions of pickle.load or eval( in a docstring are fine.\"\"\"
import pickle
import numpy as np  # np.load(path) in a comment is fine
x = pickle.load(open("f", "rb"))
y = np.load("a.npy")
z = np.load(
  "b.npz", allow_pickle=True
)
ok = np.load("c.npz", mmap_mode=None,
             allow_pickle=False)
v = eval("1 + 1")
exec("v = 2")
m = __import__("os")
def _import_module(name):
  import importlib
  return importlib.import_module(name)
w = yaml.load(text)
s = yaml.safe_load(text)
p = re.compile("x")
"""
  (tmp_path / "jebm" / "eval").mkdir(parents=True)
  (tmp_path / "bad.py").write_text(bad)
  findings = scan(tmp_path, "bad.py")
  lines = sorted({int(f.split(":")[1]) for f in findings})
  assert lines == [2, 4, 5, 6, 7, 11, 12, 13, 16, 17], "\n".join(findings)
  assert all(f.startswith("bad.py:") for f in findings)
  # The allowed place is one function of one file: the same code there is not a finding.
  allowed = (
    "def _import_module(name):\n  import importlib\n  return importlib.import_module(name)\n"
  )
  (tmp_path / "jebm" / "eval" / "features.py").write_text(allowed)
  assert scan(tmp_path, "jebm/eval/features.py") == []
  (tmp_path / "jebm" / "eval" / "features.py").write_text(allowed + "x = __import__('os')\n")
  assert [f.split(":")[1] for f in scan(tmp_path, "jebm/eval/features.py")] == ["4"]
