"""The "user flax (import jebm only)" rows: a user's plain-Flax network sampled in a fresh process
whose only jebm-specific step is ``import jebm`` before any JAX computation.

``benchmarks/run.py --extra`` starts ``python benchmarks/fresh_user_flax.py`` (a script, not
``-m``, so that nothing of the benchmark package runs before ``import jebm``) with the opt-out
variable and ``XLA_FLAGS`` removed from its environment, and talks to it over stdin/stdout in the
JSON-line protocol of ``torch_impl.py``: {"op": "setup", "workloads": [name, ...], "quick": bool}
-> {"tasks": [...], "xla_flags": ..., "energies": {name: [...]}}; {"op": "prepare" | "warmup" |
"run", "impl", "workload"} -> {"seconds": s}; {"op": "quit"}. The chains are ``jax.jit`` of
``langevin.sample`` on ``benchmarks.swap_conv.PlainFlaxEnergy`` with XLA's options as the process
has them: no compiler options passed.
"""

import jebm  # noqa: F401  (first: sets the XLA CPU options, as in a user's notebook)

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import jebm_impl  # noqa: E402
from benchmarks.workloads import all_workloads  # noqa: E402


class Server:
  def __init__(self):
    self.tasks = {}

  def setup(self, request):
    energies = {}
    for w in all_workloads(request["quick"], request["workloads"]):
      variables = jebm_impl.init_variables(w)  # the same seed: the parent's weights
      outputs = {}
      self.tasks[w.name] = jebm_impl.sample_task(w, jebm_impl.FRESH_USER_FLAX, variables, outputs)
      energies[w.name] = jebm_impl.energies(w, variables, jebm_impl.FRESH_USER_FLAX).tolist()
    tasks = [{"impl": jebm_impl.FRESH_USER_FLAX, "workload": name} for name in self.tasks]
    return {"tasks": tasks, "xla_flags": os.environ.get("XLA_FLAGS", ""), "energies": energies}

  def handle(self, request):
    if request["op"] == "setup":
      return self.setup(request)
    task = self.tasks[request["workload"]]
    run = {"prepare": task._prepare, "warmup": task._warmup, "run": task._run}
    return {"seconds": run[request["op"]]()}


if __name__ == "__main__":
  from jsonl_server import serve  # this script's folder is on sys.path

  serve(Server().handle, sys.stdin, sys.stdout)
