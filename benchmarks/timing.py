"""Timing harness: every implementation x workload is a ``Task``; repetitions run round-robin
(rep 1 of every task, then rep 2, ...) so that load from other processes on a shared machine hits
all implementations alike and the ratios stay meaningful."""

import os
import statistics
import time
from typing import Callable, Dict, List, Optional


class Task:
  """One implementation on one workload.

  ``prepare()`` builds and compiles (returns compile seconds, or None where nothing compiles);
  ``warmup()`` runs it once; ``run()`` runs one repetition and returns its wall seconds.
  """

  def __init__(
    self,
    impl: str,
    workload: str,
    sample_steps: int,
    *,
    precision: str = "float32",
    prepare: Callable[[], Optional[float]],
    run: Callable[[], float],
    warmup: Optional[Callable[[], float]] = None,
  ):
    self.impl, self.workload, self.precision = impl, workload, precision
    self.sample_steps = sample_steps
    self._prepare, self._run, self._warmup = prepare, run, warmup or run
    self.compile_s: Optional[float] = None
    self.warmup_s: Optional[float] = None
    self.times: List[float] = []
    self.error: Optional[str] = None

  def prepare(self):
    """Compiles (where there is anything to compile) and runs the warm-up repetition."""
    self.compile_s = self._prepare()
    self.warmup_s = self._warmup()

  def run(self):
    """One timed repetition."""
    self.times.append(self._run())

  def summary(self) -> Dict[str, object]:
    """Median and spread of the repetitions, throughput in sample-steps per second."""
    out: Dict[str, object] = {
      "impl": self.impl,
      "workload": self.workload,
      "precision": self.precision,
      "compile_s": self.compile_s,
      "warmup_s": self.warmup_s,
      "reps": len(self.times),
    }
    if self.error:
      out["error"] = self.error
    if self.times:
      median = statistics.median(self.times)
      out.update(
        median_s=median,
        min_s=min(self.times),
        max_s=max(self.times),
        times_s=self.times,
        steps_per_s=self.sample_steps / median,
        best_steps_per_s=self.sample_steps / min(self.times),
        reps_per_s=1.0 / median,
      )
    return out


def timed(fn: Callable[[], object]) -> float:
  """Wall seconds of ``fn()`` (which must block until its work is done)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def round_robin(tasks: List[Task], reps: int, log: Callable[[str], None] = print) -> List[float]:
  """Runs ``reps`` repetitions of every task, interleaved; a failing task is dropped. Returns the
  1-minute load average after each round (how busy the shared machine was)."""
  loads = []
  for rep in range(reps):
    for task in tasks:
      if task.error:
        continue
      try:
        task.run()
      except Exception as e:  # a failing implementation must not sink the whole run
        task.error = f"{type(e).__name__}: {e}"
    loads.append(os.getloadavg()[0])
    log(f"  round {rep + 1}/{reps} done (load average {loads[-1]:.2f})")
  return loads
