"""The ``robustness`` task: accuracy of the energy classifier under PGD, with and without the paper's
Langevin purification, against a softmax classifier of the same network, and sanity checks.

Curves (``report["robustness"][norm][curve]``, each a list of ``{"epsilon", "accuracy", ...}``):
  softmax                  the same network trained by cross-entropy only (``--softmax_workdir``),
                           attacked with the same PGD;
  ebm                      argmin_y E(x, y), attacked directly;
  ebm_purified_transfer    the paper's protocol: the ``ebm`` curve's adversarial images, then the
                           defence (a transfer attack: it never sees the defence);
  ebm_purified_bpda_eot    the defence attacked with BPDA (identity backward through the
                           purification) and EOT over its noise;
  ebm_purified_backprop    the defence attacked through all its Langevin steps (second derivatives
                           of the energy), with EOT;
  ebm_purified_any_attack  the defence's accuracy when an image counts only if all three attacks
                           above fail on it (on the adaptive curves' images).
Every accuracy is the worst case over ``attack_restarts`` random starts (an image counts as robust
only if no restart fools the classifier); the adaptive curves use the first
``num_adaptive_images`` images.
The attacks' and the defence's randomness derive from the evaluation seed.
"""

import dataclasses
import logging
import time
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jebm import adversarial, checkpoint, generate, viz
from jebm import config as config_lib
from jebm.energy import EnergyFn
from jebm.eval.batching import map_keyed_chunks

CURVES = (
  "softmax",
  "ebm",
  "ebm_purified_transfer",
  "ebm_purified_bpda_eot",
  "ebm_purified_backprop",
  "ebm_purified_any_attack",
)
DEFENCE_ATTACKS = CURVES[2:5]  # the curves that ebm_purified_any_attack combines
ZERO_ACCURACY = 0.1  # the sanity bound on undefended accuracy at the largest epsilon


@dataclasses.dataclass(frozen=True)
class RobustnessConfig:
  """Settings of the robustness task; validated on construction (messages name the field, which
  is also the ``experiments/evaluate.py`` flag).

  Attributes:
    attack_norms: attack norms, from ("linf", "l2").
    linf_epsilons, l2_epsilons: radii of each norm's curves (>= 0; 0 = clean accuracy).
    num_attack_images: test images of the softmax, ebm and transfer curves.
    num_adaptive_images: test images of the adaptive curves (BPDA + EOT, backprop) and of the
      steps sanity check (the first ones of the same images).
    attack_steps: PGD steps of the softmax and ebm curves (step size 2.5 * epsilon / steps).
    adaptive_attack_steps: PGD steps of the adaptive curves (each costs a purification, or a
      differentiation through one: about 10x and 60x an undefended step on MNIST).
    attack_restarts: random starts; accuracy is the worst case over them.
    attack_loss: "ce" (cross-entropy) or "margin" (max wrong logit - true logit).
    purify_steps: Langevin steps of the defence, per label (the model's own sampler settings).
    purify_delta: the defence keeps each refined image within +-purify_delta of its input.
    purify_chains: purifications averaged by the defence (its EOT, M).
    eot_samples: draws of the defence's noise averaged per attack gradient (adaptive curves; on
      MNIST 1, 2 and 4 gave the same accuracies: the defence's noise is small beside its steps).
    sanity_steps: (short, long) PGD steps of the check that more steps never raise accuracy.
    attack_batch_size: images per compiled attack call.
  """

  attack_norms: Tuple[str, ...] = adversarial.NORMS
  linf_epsilons: Tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
  l2_epsilons: Tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0)
  num_attack_images: int = 500
  num_adaptive_images: int = 100
  attack_steps: int = 20
  adaptive_attack_steps: int = 10
  attack_restarts: int = 2
  attack_loss: str = "ce"
  purify_steps: int = 10
  purify_delta: float = 0.1
  purify_chains: int = 1
  eot_samples: int = 2
  sanity_steps: Tuple[int, int] = (10, 50)
  attack_batch_size: int = 100

  def __post_init__(self):
    unknown = sorted(set(self.attack_norms) - set(adversarial.NORMS))
    if unknown or not self.attack_norms:
      raise ValueError(
        f"attack_norms: unknown or none {unknown or list(self.attack_norms)}; known: {adversarial.NORMS}"
      )
    for name in ("linf_epsilons", "l2_epsilons"):
      try:
        adversarial.check_epsilons(getattr(self, name))
      except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    for name in (
      "num_attack_images",
      "num_adaptive_images",
      "attack_steps",
      "adaptive_attack_steps",
      "attack_restarts",
      "purify_chains",
      "eot_samples",
      "attack_batch_size",
    ):
      value = getattr(self, name)
      if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not (isinstance(self.purify_steps, int) and self.purify_steps >= 0):
      raise ValueError(f"purify_steps must be an int >= 0, got {self.purify_steps!r}")
    if not self.purify_delta >= 0:
      raise ValueError(f"purify_delta must be >= 0, got {self.purify_delta}")
    if self.attack_loss not in adversarial.LOSSES:
      raise ValueError(f"attack_loss must be one of {adversarial.LOSSES}, got {self.attack_loss!r}")
    if len(self.sanity_steps) != 2 or not 1 <= self.sanity_steps[0] < self.sanity_steps[1]:
      raise ValueError(
        f"sanity_steps must be two step counts, short < long, got {self.sanity_steps}"
      )

  def epsilons(self, norm: str) -> Tuple[float, ...]:
    return self.linf_epsilons if norm == "linf" else self.l2_epsilons


# logits_fn(rng_key, x [B, ...]) -> [B, K]; random for the defence, key unused otherwise.
LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


def classifier_logits(energy_fn: EnergyFn, num_classes: int, temperature: float = 1.0) -> LogitsFn:
  """The undefended classifier -E(x, .) / temperature as a LogitsFn."""
  return lambda key, x: adversarial.energy_logits(energy_fn, x, num_classes, temperature)


def defended_logits(
  energy_fn: EnergyFn,
  num_classes: int,
  sampler,
  options: RobustnessConfig,
  *,
  temperature: float = 1.0,
  bpda: bool = False,
) -> LogitsFn:
  """The purification defence (``jebm.adversarial.purified_logits``) as a LogitsFn."""
  return lambda key, x: adversarial.purified_logits(
    key,
    energy_fn,
    x,
    num_classes,
    sampler,
    options.purify_delta,
    num_chains=options.purify_chains,
    temperature=temperature,
    bpda=bpda,
  )


def make_attack(logits_fn: LogitsFn, config: adversarial.PGDConfig, loss: str):
  """A compiled ``attack(rng_key, x [B, ...], labels [B], epsilon) -> x_adv [B, ...]``: one PGD
  run on ``attack_loss(logits_fn(key, x), labels)``."""

  def loss_fn(key, x, labels):
    return adversarial.attack_loss(logits_fn(key, x), labels, loss)

  return jax.jit(
    lambda key, x, labels, epsilon: adversarial.pgd(key, loss_fn, x, labels, epsilon, config)
  )


def make_predict(logits_fn: LogitsFn):
  """A compiled ``predict(rng_key, x [B, ...]) -> argmax logits [B]``."""
  return jax.jit(lambda key, x: jnp.argmax(logits_fn(key, x), axis=1))


def attack_images(rng_key, attack, images, labels, epsilon: float, *, batch_size) -> np.ndarray:
  """One restart of ``attack`` (``make_attack``) on images [N, ...] with labels [N], in host
  chunks of ``batch_size`` (``map_keyed_chunks``: each chunk draws its own key); epsilon 0 returns
  the images."""
  images = np.asarray(images, np.float32)
  if epsilon == 0 or len(images) == 0:
    return images
  eps = jnp.float32(epsilon)
  return map_keyed_chunks(
    lambda key, x, y: attack(key, x, y, eps),
    rng_key,
    (images, np.asarray(labels)),
    batch_size=batch_size,
  )


def predict_images(rng_key, predict, images, *, batch_size) -> np.ndarray:
  """Labels [N] that ``predict`` (``make_predict``) gives images [N, ...]; every chunk draws its
  own key (a random defence draws anew)."""
  if len(images) == 0:
    return np.zeros((0,), np.int32)
  return map_keyed_chunks(predict, rng_key, images, batch_size=batch_size)


def worst_case_correct(
  rng_key,
  predict,
  images,
  labels,
  epsilon: float,
  *,
  attack=None,
  adversarials=None,
  restarts: int,
  batch_size: int,
  keep_all: bool = False,
):
  """Whether each image survives every restart: restart r attacks only the images that
  ``predict`` still gets right (the worst case needs no more), with ``attack`` or, given
  ``adversarials`` [R][N, ...], with the r-th of those.

  Returns:
    (correct bool [N], accuracy after each restart [R], and with ``keep_all`` the adversarials of
    every image and restart [R][N, ...] (every image is then attacked every time), else None).
  """
  labels = np.asarray(labels)
  correct = np.ones(len(labels), bool)
  after, made = [], []
  for r in range(restarts):
    key = jax.random.fold_in(rng_key, r)
    todo = np.arange(len(labels)) if keep_all else np.flatnonzero(correct)
    if adversarials is not None:
      adv = np.asarray(adversarials[r])[todo]
    else:
      adv = attack_images(key, attack, images[todo], labels[todo], epsilon, batch_size=batch_size)
    made.append(adv)
    predicted = predict_images(jax.random.fold_in(key, 1), predict, adv, batch_size=batch_size)
    correct[todo] &= predicted == labels[todo]
    after.append(float(correct.mean()))
  return correct, after, (made if keep_all else None)


def restore_softmax_baseline(workdir: str, config: config_lib.Config):
  """(energy, temperature) of the softmax baseline in ``workdir`` (its logits are
  -E / temperature); ValueError unless it is a softmax-objective model of the same dataset and
  classes as ``config``'s."""
  state, baseline = checkpoint.restore(workdir)
  if baseline.objective != "softmax":
    raise ValueError(
      f"--softmax_workdir={workdir} holds a model trained with objective {baseline.objective!r}; "
      "the baseline must be trained with --objective=softmax (e.g. the mnist_softmax preset)"
    )
  same = ("dataset", "num_classes", "example_shape")
  mismatch = {
    k: (getattr(baseline, k), getattr(config, k))
    for k in same
    if getattr(baseline, k) != getattr(config, k)
  }
  if mismatch:
    raise ValueError(f"--softmax_workdir={workdir} is of other data than the EBM: {mismatch}")
  return generate.energy_fn(state, baseline), baseline.ce_temperature


class _Curves:
  """Runs and times the curves of one norm."""

  def __init__(self, rng_key, norm, images, labels, options: RobustnessConfig):
    self.key, self.norm, self.options = rng_key, norm, options
    self.images, self.labels = images, labels
    self.curves: Dict[str, list] = {}
    self.seconds: Dict[str, float] = {}
    self.correct: Dict[str, Dict[float, np.ndarray]] = {}  # {curve: {epsilon: bool [N]}}

  def run(self, name, epsilons, predict, *, num_images, attack=None, adversarials=None):
    """Appends one entry per epsilon to curve ``name``. The ``ebm`` curve keeps every restart's
    adversarials and returns them ({epsilon: [R][N, ...]}) for the transfer curve."""
    t0, key = time.time(), jax.random.fold_in(self.key, CURVES.index(name))
    x, y = self.images[:num_images], self.labels[:num_images]
    made, entries, self.correct[name] = {}, [], {}
    adaptive = self.options.num_adaptive_images
    for j, eps in enumerate(epsilons):
      correct, after, made[eps] = worst_case_correct(
        jax.random.fold_in(key, j),
        predict,
        x,
        y,
        eps,
        attack=attack,
        adversarials=None if adversarials is None else adversarials[eps],
        restarts=self.options.attack_restarts,
        batch_size=self.options.attack_batch_size,
        keep_all=name == "ebm",
      )
      self.correct[name][eps] = correct
      entry = {
        "epsilon": eps,
        "accuracy": float(correct.mean()),
        "accuracy_after_each_restart": after,
        "num_images": int(len(y)),
      }
      if len(y) > adaptive:  # the same images as the adaptive curves, for a like-for-like read
        entry["accuracy_on_adaptive_images"] = float(correct[:adaptive].mean())
      entries.append(entry)
    self._finish(name, entries, t0)
    return made

  def any_attack(self, name, attacks, num_images):
    """Curve ``name``: an image of the first ``num_images`` counts only if it survives every
    curve in ``attacks`` (already run, on these images or more)."""
    entries = []
    for eps in self.correct[attacks[0]]:
      correct = np.logical_and.reduce([self.correct[a][eps][:num_images] for a in attacks])
      entries.append({"epsilon": eps, "accuracy": float(correct.mean()), "num_images": num_images})
    self._finish(name, entries, time.time())

  def _finish(self, name, entries, t0):
    self.curves[name] = entries
    self.seconds[name] = round(time.time() - t0, 1)
    logging.info(
      "robustness %s: %s in %.0f s (accuracy per epsilon %s)",
      self.norm,
      name,
      self.seconds[name],
      [round(e["accuracy"], 3) for e in entries],
    )


def robustness_report(
  rng_key: jax.Array,
  energy_fn: EnergyFn,
  images,
  labels,
  num_classes: int,
  sampler,
  options: RobustnessConfig = RobustnessConfig(),
  *,
  temperature: float = 1.0,
  softmax_energy_fn: Optional[EnergyFn] = None,
  softmax_temperature: float = 1.0,
  x_range: Tuple[float, float] = (0.0, 1.0),
) -> dict:
  """Accuracy-vs-epsilon curves of the energy classifier, undefended and purified, under PGD.

  Args:
    rng_key: PRNG key of every attack and defence draw.
    energy_fn: conditional energy ``E(x [B, ...], y int [B]) -> [B]``; low = likely.
    images: [N, ...] test inputs in ``x_range`` (N >= options.num_attack_images is not required:
      fewer are used as they are).
    labels: [N] true class ids.
    num_classes: K.
    sampler: LangevinConfig of the defence (its num_steps is replaced by options.purify_steps).
    options: RobustnessConfig.
    temperature: the EBM's logits are -E / temperature (the CE term's temperature for a model
      trained with one; it changes the CE loss's gradient, not the predictions).
    softmax_energy_fn: the softmax baseline's energy, or None to skip its curve.
    softmax_temperature: its logits are -E / softmax_temperature.
    x_range: (low, high) of the data; every attacked input is clamped to it.

  Returns:
    ``{norm: {curve: [{"epsilon", "accuracy", "accuracy_after_each_restart", "num_images"}]},
    "sanity":
    {...}, "seconds": {norm: {curve: s}}, "settings": {...}}``; entries of curves on more images
    than the adaptive ones also hold "accuracy_on_adaptive_images" (the same first images).
  """
  images = np.asarray(images, np.float32)[: options.num_attack_images]
  labels = np.asarray(labels).reshape(-1)[: options.num_attack_images]
  sampler = dataclasses.replace(sampler, num_steps=options.purify_steps)
  pgd = lambda norm, steps=options.attack_steps, eot=1: adversarial.PGDConfig(
    norm=norm, num_steps=steps, eot_samples=eot, x_min=x_range[0], x_max=x_range[1]
  )
  attack = lambda logits, config: make_attack(logits, config, options.attack_loss)
  ebm = classifier_logits(energy_fn, num_classes, temperature)
  defence = lambda bpda: defended_logits(
    energy_fn, num_classes, sampler, options, temperature=temperature, bpda=bpda
  )
  predict_defended = make_predict(defence(False))
  models = {"ebm": ebm}
  if softmax_energy_fn is not None:
    models["softmax"] = classifier_logits(softmax_energy_fn, num_classes, softmax_temperature)
  report = {"seconds": {}}
  for n, norm in enumerate(options.attack_norms):
    eps = options.epsilons(norm)
    curves = _Curves(jax.random.fold_in(rng_key, n), norm, images, labels, options)
    for name, logits in sorted(models.items(), reverse=True):  # softmax first, as in CURVES
      made = curves.run(
        name,
        eps,
        make_predict(logits),
        num_images=len(images),
        attack=attack(logits, pgd(norm)),
      )
      if name == "ebm":
        curves.run(
          "ebm_purified_transfer",
          eps,
          predict_defended,
          num_images=len(images),
          adversarials=made,
        )
    for name, bpda in (("ebm_purified_bpda_eot", True), ("ebm_purified_backprop", False)):
      config = pgd(norm, options.adaptive_attack_steps, options.eot_samples)
      adaptive = attack(defence(bpda), config)
      curves.run(
        name, eps, predict_defended, num_images=options.num_adaptive_images, attack=adaptive
      )
    curves.any_attack(
      "ebm_purified_any_attack", DEFENCE_ATTACKS, min(options.num_adaptive_images, len(images))
    )
    report[norm] = curves.curves
    report["seconds"][norm] = curves.seconds
  report["sanity"] = _sanity(rng_key, report, models, images, labels, options, pgd)
  report["settings"] = {
    **dataclasses.asdict(options),
    "num_images_used": int(len(images)),
    "temperature": temperature,
    "purification_sampler": dataclasses.asdict(sampler),
    "pgd_step_size": "2.5 * epsilon / attack_steps",
    "accuracy": "worst case over restarts: an image counts only if every restart fails (a "
    "restart attacks only the images no earlier restart has fooled)",
  }
  return report


def _sanity(rng_key, report, models, images, labels, options, pgd) -> dict:
  """The checks a reviewer asks for: undefended accuracy near zero at the largest epsilon, and
  more PGD steps never raising accuracy (undefended classifiers, adaptive images, 1 restart)."""
  largest = {
    norm: {name: report[norm][name][-1]["accuracy"] for name in models}
    for norm in options.attack_norms
  }
  short, long = options.sanity_steps
  n = options.num_adaptive_images
  rows = []
  for norm in options.attack_norms:
    for name, logits in models.items():
      predict = make_predict(logits)
      attacks = {s: make_attack(logits, pgd(norm, s), options.attack_loss) for s in (short, long)}
      for j, eps in enumerate(options.epsilons(norm)):
        if eps == 0:
          continue
        row = {"norm": norm, "curve": name, "epsilon": eps}
        for steps, attack in attacks.items():
          correct, _, _ = worst_case_correct(
            jax.random.fold_in(jax.random.fold_in(rng_key, 1000 + j), steps),
            predict,
            images[:n],
            labels[:n],
            eps,
            attack=attack,
            restarts=1,
            batch_size=options.attack_batch_size,
          )
          row[f"accuracy_{steps}_steps"] = float(correct.mean())
        rows.append(row)
  return {
    "undefended_at_largest_epsilon": {
      "accuracy": largest,
      "bound": ZERO_ACCURACY,
      "passed": all(a <= ZERO_ACCURACY for per in largest.values() for a in per.values()),
    },
    "more_steps_never_raise_accuracy": {
      "rows": rows,
      "passed": all(r[f"accuracy_{long}_steps"] <= r[f"accuracy_{short}_steps"] for r in rows),
    },
    "restarts": options.attack_restarts,
  }


def save_robustness_curves(path: str, curves: dict, norm: str) -> str:
  """Accuracy vs epsilon of every curve of one norm, as a PNG; returns the path."""
  named = {
    f"{name} ({entries[0]['num_images']} images)": (
      [e["epsilon"] for e in entries],
      [e["accuracy"] for e in entries],
    )
    for name, entries in curves.items()
  }
  return viz.save_curves(
    path,
    named,
    title=f"PGD ({norm}) accuracy, worst case over restarts",
    xlabel=f"{norm} epsilon",
    ylabel="accuracy",
    ylim=(0.0, 1.0),
  )


def evaluate(ctx) -> dict:
  """The ``robustness`` task on the test split: ``robustness_report`` with ``ctx.robustness``
  (default RobustnessConfig()), the softmax baseline restored from ``ctx.softmax_workdir`` (its
  curve is left out, and the report says so, when that is None), and ``robustness_<norm>.png``."""
  if ctx.num_classes is None:
    raise ValueError(
      "the robustness task needs a conditional model (num_classes > 0): its classifier is "
      f"argmin_y E(x, y); this checkpoint is unconditional (dataset {ctx.config.dataset!r})"
    )
  options = ctx.robustness or RobustnessConfig()
  config = ctx.config
  test = ctx.test_split()
  softmax, softmax_temperature = None, 1.0
  if ctx.softmax_workdir is not None:
    softmax, softmax_temperature = restore_softmax_baseline(ctx.softmax_workdir, config)
  temperature = config.ce_temperature if config.ce_coeff > 0 else 1.0
  report = robustness_report(
    jax.random.key(ctx.seed),
    ctx.energy_fn,
    test["image"],
    test["label"],
    ctx.num_classes,
    config_lib.langevin_config(config),
    options,
    temperature=temperature,
    softmax_energy_fn=softmax,
    softmax_temperature=softmax_temperature,
    x_range=(config.x_min, config.x_max),
  )
  report["softmax_workdir"] = ctx.softmax_workdir or "none given: no softmax curve"
  report["png"] = {
    norm: save_robustness_curves(ctx.path(f"robustness_{norm}.png"), report[norm], norm)
    for norm in options.attack_norms
  }
  return report
