"""Turns task summaries into the results table (stdout) and the target checks (JSON)."""

import json
import sys
from typing import Dict, List, Optional

BASELINE = "jebm"
TORCH_F32 = (
  "torch eager NCHW",
  "torch eager channels_last",
  "torch eager channels_last (sym. pad)",
)


def annotate(results: List[Dict], flops: Dict[str, Dict], peak: Dict[str, Optional[float]]) -> None:
  """Adds to every result its ratio to jebm on the same workload and its fraction of the float32
  FLOP limit (XLA-counted FLOPs per sample-step x sample-steps/s / matmul FLOP/s), for the median
  repetition and for the best one (``*_best``: the least disturbed by other load)."""
  for stat, suffix in (("steps_per_s", ""), ("best_steps_per_s", "_best")):
    base = {r["workload"]: r.get(stat) for r in results if r["impl"] == BASELINE}
    limit = peak.get("jax_matmul_f32" + suffix)
    for r in results:
      rate, ref = r.get(stat), base.get(r["workload"])
      r["ratio_to_jebm" + suffix] = rate / ref if rate and ref else None
      per_step = flops.get(r["workload"], {}).get("xla")
      r["fraction_of_f32_limit" + suffix] = (
        rate * per_step / limit if rate and per_step and limit else None
      )


def _fmt(value, spec, empty="-"):
  return empty if value is None else format(value, spec)


def table(results: List[Dict]) -> str:
  """A fixed-width table: workload, implementation, median and best throughput with their ratios
  to jebm, % of the float32 limit (best repetition), compile seconds, spread (max-min)/median."""
  width = max([len("workload")] + [len(r["workload"]) for r in results])
  header = (
    f"{'workload':{width}s} {'implementation':27s} {'steps/s':>8s} {'x jebm':>6s} "
    f"{'best/s':>8s} {'x jebm':>6s} {'%limit':>6s} {'train/s':>7s} {'compile':>7s} "
    f"{'spread':>6s}"
  )
  lines = [header, "-" * len(header)]
  for r in results:
    if r["workload"] == "matmul":
      continue
    spread = (r["max_s"] - r["min_s"]) / r["median_s"] if r.get("median_s") else None
    frac = r.get("fraction_of_f32_limit_best")
    train = r.get("reps_per_s") if r["workload"].endswith("train") else None
    lines.append(
      f"{r['workload']:{width}s} {r['impl']:27s} {_fmt(r.get('steps_per_s'), '8.0f'):>8s} "
      f"{_fmt(r.get('ratio_to_jebm'), '6.2f'):>6s} {_fmt(r.get('best_steps_per_s'), '8.0f'):>8s} "
      f"{_fmt(r.get('ratio_to_jebm_best'), '6.2f'):>6s} "
      f"{_fmt(None if frac is None else 100 * frac, '6.1f'):>6s} {_fmt(train, '7.3f'):>7s} "
      f"{_fmt(r.get('compile_s'), '7.1f'):>7s} {_fmt(spread, '6.2f'):>6s}"
      + (f"  ERROR {r['error']}" if r.get("error") else "")
    )
  return "\n".join(lines)


def _value(results, workload, impl, key):
  for r in results:
    if r["workload"] == workload and r["impl"] == impl:
      return r.get(key)
  return None


def _best(results, workload, impls, key):
  rates = [(_value(results, workload, i, key), i) for i in impls]
  rates = [(v, i) for v, i in rates if v]
  return max(rates) if rates else (None, None)


def _check(name, value, goal, impl, stat, detail=""):
  return {
    "target": name,
    "impl": impl,
    "stat": stat,
    "value": value,
    "goal": goal,
    "met": None if value is None else value >= goal,
    "detail": detail,
  }


def _workload_checks(results, workload, impl, stat):
  key = "steps_per_s" if stat == "median" else "best_steps_per_s"
  mine, out = _value(results, workload, impl, key), []
  if mine is None:
    return out
  best, best_impl = _best(results, workload, TORCH_F32, key)
  if best:
    out.append(
      _check(
        f"{workload}: >= 1.0x best float32 PyTorch",
        mine / best,
        1.0,
        impl,
        stat,
        f"best: {best_impl}",
      )
    )
  torchebm = _value(results, workload, "torchebm", key)
  if torchebm:
    goal = 10.0 if workload == "mlp2d_sample" else 1.5
    out.append(_check(f"{workload}: >= {goal}x torchebm", mine / torchebm, goal, impl, stat))
  suffix = "" if stat == "median" else "_best"
  frac = _value(results, workload, impl, "fraction_of_f32_limit" + suffix)
  if workload in ("mnist_sample", "cifar_sample") and frac is not None:
    out.append(_check(f"{workload}: >= 60% of float32 FLOP limit", frac, 0.6, impl, stat))
  return out


def targets(results: List[Dict], compile_cifar_train: Dict[str, Optional[float]]) -> List[Dict]:
  """The issue's targets for jebm, on the median and on the best repetition."""
  out = []
  for stat in ("median", "best"):
    for workload in ("mnist_sample", "cifar_sample", "mnist_train", "cifar_train", "mlp2d_sample"):
      out += _workload_checks(results, workload, BASELINE, stat)
  seconds = compile_cifar_train.get(BASELINE)
  if seconds is not None:
    out.append(
      _check(
        "cifar_train: compile <= 10 s",
        10.0 / seconds,
        1.0,
        BASELINE,
        "compile",
        f"{seconds:.1f} s (value is 10 s / compile time)",
      )
    )
  return out


def targets_text(checks: List[Dict]) -> str:
  """One line per target."""
  mark = {True: "MET ", False: "MISS", None: "n/a "}
  return "\n".join(
    f"  [{mark[c['met']]}] {c['stat']:7s} {c['impl']:24s} {c['target']:46s} "
    f"{_fmt(c['value'], '.2f')} (goal {c['goal']}) {c['detail']}"
    for c in checks
  )


def render(data: Dict) -> str:
  """The text report of a results dict (as written by benchmarks.run)."""
  peak = data["peak_flops"]
  lines = [
    f"float32 limit (jax matmul 2048^2): median {peak['jax_matmul_f32'] / 1e9:.1f} GFLOP/s, "
    f"best {peak['jax_matmul_f32_best'] / 1e9:.1f} GFLOP/s"
  ]
  if peak.get("torch_matmul_f32"):
    lines[-1] += f"; torch matmul median {peak['torch_matmul_f32'] / 1e9:.1f} GFLOP/s"
  seen = {}
  for name, v in data["flops"].items():
    seen.setdefault((v["xla"], v["analytic"]), []).append(name)
  lines.append(
    "FLOPs per sample-step (XLA cost analysis / analytic): "
    + "; ".join(
      f"{'/'.join(names)} {x / 1e6:.4g}M / {a / 1e6:.4g}M" for (x, a), names in seen.items()
    )
  )
  lines += [table(data["results"]), "targets:", targets_text(data["targets"])]
  return "\n".join(lines)


def main(argv=None) -> int:
  """``python -m benchmarks.report results.json``: re-renders (and re-annotates) a results file."""
  path = (argv if argv is not None else sys.argv[1:])[0]
  with open(path) as f:
    data = json.load(f)
  for r in data["results"]:
    if r.get("times_s"):
      r["best_steps_per_s"] = r["steps_per_s"] * r["median_s"] / r["min_s"]
  peak = data["peak_flops"]
  matmul = next(r for r in data["results"] if r["impl"] == "jax matmul")
  peak["jax_matmul_f32_best"] = matmul["best_steps_per_s"]
  annotate(data["results"], data["flops"], peak)
  compile_cifar = {
    r["impl"]: r["compile_s"] for r in data["results"] if r["workload"] == "cifar_train"
  }
  data["targets"] = targets(data["results"], compile_cifar)
  print(render(data))
  return 0


if __name__ == "__main__":
  sys.exit(main())
