"""Langevin-sampling and training throughput of jebm, optionally against PyTorch.

  python -m benchmarks.run [--quick] [--torch] [--out results.json] [--reps N]

Prints a table (sample-steps per second, ratio to jebm, fraction of the float32 FLOP limit,
compile seconds) and writes it with everything measured to a JSON file. See benchmarks/README.md.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import jax
import jaxlib
import numpy as np

from benchmarks import jebm_impl, report
from benchmarks.timing import Task, round_robin
from benchmarks.workloads import Workload, all_workloads
from jebm.xla_flags import OPT_OUT

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TORCH_VENV = os.path.join(HERE, ".torch-venv")


def log(message: str) -> None:
  """Progress goes to stderr so that stdout holds only the table."""
  print(message, file=sys.stderr, flush=True)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--quick",
    action="store_true",
    help="small batches / chains / 3 reps: a smoke run in well under 2 minutes",
  )
  parser.add_argument(
    "--torch",
    action="store_true",
    help="also run the PyTorch implementations (sets up their venv if missing)",
  )
  parser.add_argument("--out", default=os.path.join(HERE, "results.json"), help="JSON output")
  parser.add_argument(
    "--reps", type=int, default=None, help="timed repetitions (default 5; 3 quick)"
  )
  parser.add_argument("--workloads", default=None, help="comma-separated subset of workload names")
  parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 jebm variant")
  parser.add_argument(
    "--impls",
    default=None,
    help="comma-separated subset of implementation names (matmuls always run)",
  )
  parser.add_argument(
    "--extra",
    action="store_true",
    help="also time jebm bf16 -convgrad, the user-Flax rows (in this process and in a fresh one "
    "that only imports jebm) and torch with symmetric padding",
  )
  parser.add_argument("--torch-venv", default=DEFAULT_TORCH_VENV, help="the PyTorch environment")
  parser.add_argument(
    "--torch-threads",
    type=int,
    default=None,
    help="torch intra-op threads (default: torch's own, one per core)",
  )
  args = parser.parse_args(argv)
  if args.workloads:
    try:
      all_workloads(only=args.workloads.split(","))
    except ValueError as e:
      parser.error(str(e))
  return args


def cpu_model() -> str:
  """The CPU's model name (Linux), else the platform's processor string."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def environment() -> Dict[str, object]:
  """What the numbers were measured on."""
  return {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "cpu": cpu_model(),
    "cpu_count": os.cpu_count(),
    "platform": platform.platform(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "loadavg_start": list(os.getloadavg()),
    "time": time.strftime("%Y-%m-%d %H:%M:%S"),
  }


class Worker:
  """A benchmark script in its own process, answering JSON-line requests (replies prefixed
  "@@"): the PyTorch implementations, or the fresh ``import jebm`` process."""

  def __init__(self, python: str, script: str, env: Dict[str, str]):
    self.proc = subprocess.Popen(
      [python, os.path.join(HERE, script)],
      env=env,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      bufsize=1,
    )

  def request(self, **message):
    """Sends one request and returns its reply; raises RuntimeError on a reported error."""
    self.proc.stdin.write(json.dumps(message) + "\n")
    self.proc.stdin.flush()
    for line in self.proc.stdout:
      if line.startswith("@@"):
        reply = json.loads(line[2:])
        if "error" in reply:
          raise RuntimeError(reply["error"])
        return reply
    raise RuntimeError(f"the benchmark process {self.proc.args} exited")

  def close(self):
    try:
      self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
      self.proc.stdin.flush()
      self.proc.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
      self.proc.kill()


def worker_task(
  worker: Worker, impl: str, workload: str, steps: int, precision="float32", prepares=False
) -> Task:
  """A task that the worker runs: each op is a request (``prepares``: it compiles on request)."""
  call = lambda op: worker.request(op=op, impl=impl, workload=workload)["seconds"]
  return Task(
    impl,
    workload,
    steps,
    precision=precision,
    prepare=(lambda: call("prepare")) if prepares else (lambda: None),
    run=lambda: call("run"),
    warmup=lambda: call("warmup"),
  )


def torch_worker(venv: str, threads: Optional[int] = None) -> Worker:
  """The PyTorch implementations, in their own environment (set up on first use)."""
  python = os.path.join(venv, "bin", "python")
  if not os.path.exists(python):
    log(f"setting up the PyTorch environment in {venv} ...")
    subprocess.run(["bash", os.path.join(HERE, "setup_torch_env.sh"), venv], check=True)
  env = dict(os.environ)
  if threads:
    env["OMP_NUM_THREADS"] = str(threads)
  return Worker(python, "torch_impl.py", env)


def fresh_user_flax_tasks(workloads: List[Workload], variables, quick: bool):
  """The "user flax (import jebm only)" rows, from a fresh process whose environment has neither
  ``XLA_FLAGS`` nor jebm's opt-out variable: its tasks, the worker, and its report (the XLA
  options ``import jebm`` set there; its energies against jebm's at the chain starts)."""
  convs = [w for w in workloads if w.kind == "sample" and w.net != "mlp"]
  if not convs:
    return [], None, {}
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", OPT_OUT)}
  worker = Worker(sys.executable, "fresh_user_flax.py", env)
  reply = worker.request(op="setup", workloads=[w.name for w in convs], quick=quick)
  check = {
    w.name: float(
      np.max(
        np.abs(np.asarray(reply["energies"][w.name]) - jebm_impl.energies(w, variables[w.name]))
      )
    )
    for w in convs
  }
  impl = jebm_impl.FRESH_USER_FLAX
  tasks = [worker_task(worker, impl, w.name, w.sample_steps, prepares=True) for w in convs]
  return tasks, worker, {"xla_flags": reply["xla_flags"], "energy_check": check}


def torch_tasks(
  server: Worker, workloads: List[Workload], variables, weights_dir: str, extra: bool = False
):
  """Sets the server up with jebm's weights and returns its tasks plus its report."""
  by_name = {w.name: w for w in workloads}
  for w in workloads:
    arrays = jebm_impl.export_weights(w, variables[w.name])
    np.savez(os.path.join(weights_dir, w.name + ".npz"), **arrays)
  reply = server.request(
    op="setup",
    workloads=[w.spec() for w in workloads],
    weights_dir=weights_dir,
    extra=extra,
    matmul_size=jebm_impl.MATMUL_SIZE,
  )
  tasks = []
  for t in reply["tasks"]:
    impl, name = t["impl"], t["workload"]
    steps = 2 * jebm_impl.MATMUL_SIZE**3 if name == "matmul" else by_name[name].sample_steps
    precision = "bf16 autocast" if "bf16" in impl else "float32"
    tasks.append(worker_task(server, impl, name, steps, precision))
  return tasks, {"energy_check": reply["energy_check"], "info": reply["info"]}


def flop_counts(workloads: List[Workload], variables) -> Dict[str, Dict[str, float]]:
  """FLOPs per sample-step: XLA's cost analysis of one ``langevin.step`` and the analytic count
  (a training workload shares its sampling twin's chain, so each network is analysed once)."""
  out, seen = {}, {}
  for w in workloads:
    key = (w.net, w.shape, w.hidden, w.batch, w.num_steps)
    if key not in seen:
      seen[key] = {
        "xla": jebm_impl.step_flops_xla(w, variables[w.name]),
        "analytic": jebm_impl.step_flops_analytic(w),
      }
    out[w.name] = seen[key]
  return out


def prepare_all(tasks: List[Task]) -> None:
  """Compiles and warms up every task, timing compile separately; failures are recorded."""
  for task in tasks:
    log(f"  preparing {task.workload} / {task.impl}")
    try:
      task.prepare()
    except Exception as e:  # one broken implementation must not sink the run
      task.error = f"{type(e).__name__}: {e}"
      log(f"    failed: {task.error}")


def collect(args) -> Dict[str, object]:
  """Runs everything and returns the JSON-able report."""
  if "xla_cpu_" in os.environ.get("XLA_FLAGS", ""):
    log("warning: XLA_FLAGS sets XLA CPU options; the '-flags' rows then get them too")
  env = environment()
  only = args.workloads.split(",") if args.workloads else None
  workloads = all_workloads(args.quick, only)
  reps = args.reps or (3 if args.quick else 5)
  variables = {w.name: jebm_impl.init_variables(w) for w in workloads}
  outputs = {w.name: {} for w in workloads}
  flops = flop_counts(workloads, variables)
  tasks = [jebm_impl.matmul_task()]
  for w in workloads:
    tasks += jebm_impl.make_tasks(
      w, variables[w.name], outputs[w.name], not args.no_bf16, args.extra
    )
  extra, workers = {}, []
  with tempfile.TemporaryDirectory() as weights_dir:
    try:
      if args.extra:
        more, worker, extra["fresh_user_flax"] = fresh_user_flax_tasks(
          workloads, variables, args.quick
        )
        tasks, workers = tasks + more, workers + ([worker] if worker else [])
      if args.torch:
        workers.append(torch_worker(args.torch_venv, args.torch_threads))
        more, extra["torch"] = torch_tasks(
          workers[-1], workloads, variables, weights_dir, args.extra
        )
        tasks += more
      if args.impls:
        keep = set(args.impls.split(",")) | {"jax matmul", "torch matmul"}
        tasks = [t for t in tasks if t.impl in keep]
      log(f"compiling and warming up {len(tasks)} tasks ...")
      prepare_all(tasks)
      log(f"timing: {reps} rounds, round-robin ...")
      loads = round_robin(tasks, reps, log)
    finally:
      for worker in workers:
        worker.close()
  env.update(loadavg_end=list(os.getloadavg()), loadavg_per_round=loads)
  return assemble(args, env, workloads, tasks, flops, variables, outputs, extra, reps)


def assemble(args, env, workloads, tasks, flops, variables, outputs, extra, reps):
  """The report: environment, settings, FLOPs, peak, per-task results, targets, bf16 quality."""
  results = [t.summary() for t in tasks]
  rate = lambda impl, key: next((r.get(key) for r in results if r["impl"] == impl), None)
  peak = {
    "jax_matmul_f32": rate("jax matmul", "steps_per_s"),
    "jax_matmul_f32_best": rate("jax matmul", "best_steps_per_s"),
    "torch_matmul_f32": rate("torch matmul", "steps_per_s"),
    "matmul": "2048x2048 @ 2048x2048 float32; median and best repetition",
  }
  report.annotate(results, flops, peak)
  compile_cifar = {r["impl"]: r["compile_s"] for r in results if r["workload"] == "cifar_train"}
  quality = {
    w.name: jebm_impl.bf16_quality(w, variables[w.name], outputs[w.name])
    for w in workloads
    if w.kind == "sample" and w.net == "conv"
  }
  return {
    "environment": env,
    "settings": {
      "quick": args.quick,
      "reps": reps,
      "torch": args.torch,
      "torch_threads": args.torch_threads,
      "extra": args.extra,
      "workloads": [w.spec() for w in workloads],
    },
    "peak_flops": peak,
    "flops": flops,
    "results": results,
    "targets": report.targets(results, compile_cifar),
    "bf16_quality": quality,
    "torch": extra.get("torch", {}),
    "fresh_user_flax": extra.get("fresh_user_flax", {}),
  }


def main(argv=None) -> int:
  args = parse_args(argv)
  data = collect(args)
  print(report.render(data))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(data, f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
