"""The evaluation tasks by name: each is ``task(ctx: EvalContext) -> JSON-serialisable dict``,
written to ``report.json[name]`` by ``experiments/evaluate.py``. A new evaluation is a module in
``jebm/eval/`` with an ``evaluate(ctx)`` function, plus one entry here."""

from typing import Callable, Dict, Tuple

from jebm.config import Config
from jebm.eval import classify, generation, histograms, likelihood, ood, restore, robustness, steps
from jebm.eval.context import EvalContext

Task = Callable[[EvalContext], dict]

TASKS: Dict[str, Task] = {
  "sample_quality": generation.evaluate,
  "classify": classify.evaluate,
  "histograms": histograms.evaluate,
  "ood": ood.evaluate,
  "robustness": robustness.evaluate,
  "restore": restore.evaluate,
  "steps": steps.evaluate,
  "likelihood": likelihood.evaluate,
}

# Tasks run only when asked for by name (they take minutes to tens of minutes on MNIST on a CPU).
ON_REQUEST = ("robustness", "restore", "steps", "likelihood")

# What a task needs of the model: (test on its Config, what to say when it fails).
REQUIREMENTS = {
  "classify": (lambda c: c.class_conditional, "a conditional model (num_classes > 0)"),
  "robustness": (lambda c: c.class_conditional, "a conditional model (num_classes > 0)"),
  "restore": (
    lambda c: c.class_conditional and len(c.example_shape) == 3,
    "a conditional model (num_classes > 0) of image data [H, W, C]",
  ),
  "sample_quality": (
    lambda c: len(c.example_shape) == 3,
    "image data [H, W, C] (a judge classifier scores the samples)",
  ),
  "steps": (
    lambda c: len(c.example_shape) == 3,
    "image data [H, W, C] (a judge classifier scores the samples)",
  ),
}


def applies(name: str, config: Config) -> bool:
  """Whether task ``name`` applies to a model of ``config`` (none applies to a model of a float
  condition: each task draws or scores per class)."""
  if config.conditional and not config.class_conditional:
    return False
  return name not in REQUIREMENTS or REQUIREMENTS[name][0](config)


def default_tasks(config: Config) -> Tuple[str, ...]:
  """Every task that applies to a model of ``config``, but those in ON_REQUEST."""
  return tuple(t for t in TASKS if applies(t, config) and t not in ON_REQUEST)


def check_tasks(names, config: Config) -> None:
  """Raises ValueError for an unknown task name, or a task that does not apply to the model
  (e.g. classify on an unconditional one), before any work is done."""
  unknown = sorted(set(names) - set(TASKS))
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; known: {sorted(TASKS)}")
  if config.conditional and not config.class_conditional:
    raise ValueError(
      f"this checkpoint's model is conditioned on --condition={config.condition} vectors; the "
      "evaluation tasks need class ids or no condition. Score dSprites factor models with "
      "experiments.compose, whose read-outs measure each condition"
    )
  for name in names:
    if not applies(name, config):
      raise ValueError(
        f"task {name!r} needs {REQUIREMENTS[name][1]}; this checkpoint's model does not have it "
        f"(dataset "
        f"{config.dataset!r}, num_classes={config.num_classes}, example_shape="
        f"{config.example_shape})"
      )
