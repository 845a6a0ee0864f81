r"""Kill torture: SIGKILL a training run at random moments, restart it each time, and check that it
ends bit for bit where an uninterrupted run of the same command ends.

  python tests/reliability/kill_torture.py --kills=20

Runs ``python -m experiments.train`` with a tiny digits config (2 emulated CPU devices) once
uninterrupted (the reference), then in another workdir: start, wait until the run has saved a new
checkpoint (it made progress), kill it at a moment drawn from a seeded random generator, restart
the same command, ..., ``--kills`` times, and let the last start finish. Kill moments, in turn at
random: while orbax writes a checkpoint (its temporary folder exists), just after a checkpoint is
renamed into place (orbax may be deleting an old one), or after a random delay (mid-step, mid
sample-grid or mid-config write). A kill is survived when the next start resumed from the newest
checkpoint without a warning or an error and saved a newer one (or finished). At the end both
final train states (step, params, model state, optimiser state, replay buffer, rng) are restored
with ``jebm.checkpoint.restore`` and compared leaf by leaf, bit for bit.

Every start pays Python, JAX and data start-up; JAX's persistent compilation cache (in the work
folder, filled before the first kill: a kill mid-write could leave a truncated cache entry) saves
the compilations. ``--no_cache`` turns it off.

The last line printed is ``survived K/N, parameters identical: true|false``.
"""

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TMP_MARK = ".orbax-checkpoint-tmp"
CHECKPOINT_EVERY = 2
TRAIN_FLAGS = [
  "--preset=default",
  "--features=4,8",
  "--langevin_steps=2",
  "--batch_size=16",
  "--buffer_capacity=128",
  "--log_every=10",
  "--sample_every=7",  # some kills land while a sample grid is drawn and written
  f"--checkpoint_every={CHECKPOINT_EVERY}",
  "--ema_decay=0.9",  # the parameter average, in the optimiser state, must survive kills too
]
MODES = ("during_write", "after_write", "random_delay")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=20, help="Number of SIGKILLs.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
  parser.add_argument("--num_steps", type=int, default=None, help="Default: 30 + 12 per kill.")
  parser.add_argument("--root", default=None, help="Work folder (default: a new temporary one).")
  parser.add_argument("--data_dir", default=None, help="Prepared data (default: under --root).")
  parser.add_argument("--timeout", type=float, default=300, help="Seconds a start may take.")
  parser.add_argument("--no_cache", action="store_true", help="No JAX compilation cache.")
  return parser.parse_args(argv)


def subprocess_env(root: Path, data_dir: Path, cache: bool) -> dict:
  env = dict(
    os.environ,
    JEBM_DATA_DIR=str(data_dir),
    PYTHONUNBUFFERED="1",
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
  )
  if cache:
    env.update(
      JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
  return env


def start(workdir: Path, num_steps: int, env: dict, log: Path) -> subprocess.Popen:
  command = [sys.executable, "-m", "experiments.train", *TRAIN_FLAGS, f"--num_steps={num_steps}"]
  with open(log, "w") as f:
    return subprocess.Popen(
      [*command, f"--workdir={workdir}"], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
    )


def run_to_end(workdir: Path, num_steps: int, env: dict, log: Path, timeout: float) -> None:
  proc = start(workdir, num_steps, env, log)
  if proc.wait(timeout=timeout) != 0:
    raise SystemExit(f"the run in {workdir} failed; see {log}:\n{log.read_text()[-3000:]}")


def entries(workdir: Path):
  try:
    return os.listdir(workdir / "checkpoints")
  except FileNotFoundError:
    return []


def newest_step(workdir: Path):
  """The newest finished checkpoint's step (None when there is none)."""
  return max((int(n) for n in entries(workdir) if n.isdigit()), default=None)


def wait_for(condition, proc: subprocess.Popen, timeout: float, poll: float) -> bool:
  """Polls ``condition()`` until it holds (True) or ``proc`` exits or time runs out (False)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return True
    if proc.poll() is not None:
      return condition()
    time.sleep(poll)
  return False


def newer_than(workdir: Path, step):
  return lambda: (newest_step(workdir) or -1) > (-1 if step is None else step)


def kill_at(proc, workdir: Path, mode: str, rng: random.Random, timeout: float) -> bool:
  """Waits for the moment ``mode`` (the run has already saved a new checkpoint), then SIGKILLs;
  False when the run ended by itself first."""
  if mode == "during_write":
    wait_for(lambda: any(TMP_MARK in n for n in entries(workdir)), proc, timeout, 0.002)
  elif mode == "after_write":
    wait_for(newer_than(workdir, newest_step(workdir)), proc, timeout, 0.002)
  else:
    time.sleep(rng.uniform(0.0, 0.5))
  proc.send_signal(signal.SIGKILL)
  return proc.wait() == -signal.SIGKILL


def judge_restart(log: Path, resumed_from, made_progress: bool, rc) -> str:
  """'' when a start resumed from ``resumed_from`` cleanly and made progress, else why not."""
  text = log.read_text()
  resumed = re.search(r"Resumed from step (\d+)", text)
  got = None if resumed is None else int(resumed.group(1))
  if got != resumed_from:
    return f"resumed from step {got}, expected {resumed_from}"
  for bad in ("Traceback", "damaged", "Moved checkpoint"):
    if bad in text:
      return f"its log says {bad!r}"
  if rc not in (None, 0, -signal.SIGKILL):
    return f"exit status {rc}"
  return "" if made_progress else "no new checkpoint"


def torture(workdir: Path, args, env: dict, logs: Path, num_steps: int):
  """Kills and restarts the run ``args.kills`` times; returns (survived, lines to print)."""
  rng = random.Random(args.seed)
  survived, lines = 0, []
  for i in range(args.kills + 1):
    before = newest_step(workdir)
    log = logs / f"start_{i:03d}.log"
    proc = start(workdir, num_steps, env, log)
    last = i == args.kills
    if last:
      rc = proc.wait(timeout=args.timeout)
      progress = rc == 0 and newest_step(workdir) == num_steps
    else:
      progress = wait_for(newer_than(workdir, before), proc, args.timeout, 0.05)
      rc = proc.poll()
      mode = rng.choice(MODES)
      if progress and rc is None and not kill_at(proc, workdir, mode, rng, args.timeout):
        rc = proc.returncode
      elif rc is None and not progress:
        proc.kill()
        proc.wait()
    if i > 0:
      why = judge_restart(log, before, progress, rc)
      survived += not why
      lines.append(f"kill {i}: {'survived' if not why else 'NOT survived: ' + why} ({log})")
    if not last:
      if rc is not None:  # it ended by itself: no kill to count
        lines.append(f"start {i} ended by itself (status {rc}) before kill {i + 1}; see {log}")
        break
      unfinished = [n for n in entries(workdir) if TMP_MARK in n]
      lines.append(
        f"kill {i + 1}: {mode}, newest checkpoint {newest_step(workdir)}, unfinished {unfinished}"
      )
  return survived, lines


def saved_leaves(workdir: Path):
  """(step, {key path: numpy array}) of the newest checkpoint, rng as raw key data."""
  sys.path.insert(0, str(ROOT))
  import jax

  from jebm import checkpoint

  state, _ = checkpoint.restore(str(workdir))
  state = state.replace(rng=jax.random.key_data(state.rng))
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  return int(state.step), {jax.tree_util.keystr(p): leaf for p, leaf in leaves}


def identical(a: Path, b: Path) -> bool:
  import numpy as np

  (step_a, leaves_a), (step_b, leaves_b) = saved_leaves(a), saved_leaves(b)
  if step_a != step_b or leaves_a.keys() != leaves_b.keys():
    return False
  for key, x in leaves_a.items():
    x, y = np.asarray(x), np.asarray(leaves_b[key])
    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
      print(f"differs: {key}")
      return False
  return True


def main(argv=None):
  args = parse_args(argv)
  t0 = time.time()
  root = Path(args.root or tempfile.mkdtemp(prefix="kill_torture_")).resolve()
  root.mkdir(parents=True, exist_ok=True)
  data_dir = Path(args.data_dir).resolve() if args.data_dir else root / "data"
  env = subprocess_env(root, data_dir, cache=not args.no_cache)
  num_steps = args.num_steps or 30 + 12 * args.kills
  logs = root / "logs"
  logs.mkdir(exist_ok=True)
  reference, tortured = root / "reference", root / "tortured"
  for path in (reference, tortured, root / "warm"):
    shutil.rmtree(path, ignore_errors=True)
  print(f"work folder {root}; {num_steps} steps, a checkpoint every {CHECKPOINT_EVERY}", flush=True)
  run_to_end(reference, num_steps, env, logs / "reference.log", args.timeout)
  # Fill the compilation cache with what a resumed start compiles, before any kill.
  shutil.copytree(reference, root / "warm")
  for step in sorted(int(n) for n in entries(root / "warm") if n.isdigit())[1:]:
    shutil.rmtree(root / "warm" / "checkpoints" / str(step))
  run_to_end(root / "warm", num_steps, env, logs / "warm.log", args.timeout)
  print(f"reference run and warm-up: {time.time() - t0:.0f} s", flush=True)
  survived, lines = torture(tortured, args, env, logs, num_steps)
  print("\n".join(lines))
  left = [n for n in entries(tortured) if TMP_MARK in n]
  aside = tortured / "corrupt_checkpoints"
  aside = sorted(os.listdir(aside)) if aside.exists() else []
  print(f"temporary folders left: {left}; checkpoints moved aside: {aside}")
  same = newest_step(tortured) == num_steps and identical(reference, tortured)
  print(f"wall time {time.time() - t0:.0f} s")
  print(f"survived {survived}/{args.kills}, parameters identical: {str(same).lower()}")


if __name__ == "__main__":
  main()
