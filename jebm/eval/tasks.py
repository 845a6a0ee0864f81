"""The evaluation tasks by name: each is ``task(ctx: EvalContext) -> JSON-serialisable dict``,
written to ``report.json[name]`` by ``experiments/evaluate.py``. A new evaluation is a module in
``jebm/eval/`` with an ``evaluate(ctx)`` function, plus one entry here."""

from typing import Callable, Dict, Tuple

from jebm.config import Config
from jebm.eval import classify, generation, histograms, ood
from jebm.eval.context import EvalContext

Task = Callable[[EvalContext], dict]

TASKS: Dict[str, Task] = {
  "sample_quality": generation.evaluate,
  "classify": classify.evaluate,
  "histograms": histograms.evaluate,
  "ood": ood.evaluate,
}

# Tasks that only make sense for a conditional model (asking for them on another is an error).
CONDITIONAL_TASKS = ("classify",)


def default_tasks(config: Config) -> Tuple[str, ...]:
  """Every task that applies to a model of ``config``."""
  return tuple(t for t in TASKS if config.conditional or t not in CONDITIONAL_TASKS)


def check_tasks(names, config: Config) -> None:
  """Raises ValueError for an unknown task name or a conditional-only task on an unconditional
  model, before any work is done."""
  unknown = sorted(set(names) - set(TASKS))
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; known: {sorted(TASKS)}")
  misplaced = [t for t in names if t in CONDITIONAL_TASKS and not config.conditional]
  if misplaced:
    raise ValueError(
      f"tasks {misplaced} need a conditional model (num_classes > 0); this checkpoint is "
      f"unconditional (dataset {config.dataset!r})"
    )
