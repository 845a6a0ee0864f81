"""PGD, the purification defence and the robustness report, on cases with known answers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jebm import adversarial, langevin, train
from jebm.eval import robustness
from jebm.models import ConvEnergy

SHAPE = (4, 4, 1)
PURIFIER = langevin.LangevinConfig(num_steps=10, step_size=0.05, noise_scale=0.01, grad_clip=None)


def linear_energy(w, b):
  """E(x, y) = -(w_y . x + b_y): the linear classifier with logits w x + b."""

  def energy_fn(x, y):
    logits = x.reshape(x.shape[0], -1) @ w.T + b
    return -jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]

  return energy_fn


def gaussian_classes_energy(means):
  """E(x, y) = ||x - mean_y||^2 / 2: each class a unit Gaussian around its mean image."""

  def energy_fn(x, y):
    return 0.5 * jnp.sum(jnp.square(x - means[y]).reshape(x.shape[0], -1), axis=1)

  return energy_fn


def ce_loss(energy_fn, num_classes):
  return lambda key, x, y: adversarial.attack_loss(
    adversarial.energy_logits(energy_fn, x, num_classes), y
  )


@pytest.mark.parametrize("norm", adversarial.NORMS)
def test_pgd_stays_in_the_ball_around_the_clean_image_and_in_range_and_raises_the_loss(norm):
  x = jax.random.uniform(jax.random.key(0), (16,) + SHAPE)
  x = x.at[:4].set(1.0).at[4:8].set(0.0)  # the clamp to [0, 1] is active here
  labels = jnp.arange(16) % 3
  w, b = jax.random.normal(jax.random.key(1), (3, 16)), jnp.zeros(3)
  loss = ce_loss(linear_energy(w, b), 3)
  eps = 0.1 if norm == "linf" else 0.5
  for steps in (1, 3, 10):  # every iterate of a longer run is the last one of a shorter run
    config = adversarial.PGDConfig(norm=norm, num_steps=steps)
    x_adv = jax.jit(adversarial.pgd, static_argnums=(1, 5))(
      jax.random.key(steps), loss, x, labels, eps, config
    )
    delta = (x_adv - x).reshape(16, -1)
    size = jnp.abs(delta).max(axis=1) if norm == "linf" else jnp.linalg.norm(delta, axis=1)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool(jnp.all(loss(None, x_adv, labels) > loss(None, x, labels)))
  # Points far outside land on the ball's boundary or inside, never beyond.
  far = x + 5.0 * jax.random.normal(jax.random.key(2), x.shape)
  projected = adversarial.project(far, x, eps, adversarial.PGDConfig(norm=norm))
  delta = (projected - x).reshape(16, -1)
  size = jnp.abs(delta).max(axis=1) if norm == "linf" else jnp.linalg.norm(delta, axis=1)
  assert float(size.max()) <= eps * (1 + 1e-5) and float(projected.min()) >= 0.0


def test_pgd_on_a_linear_classifier_succeeds_at_the_closed_form_minimal_linf_distance():
  # Two classes, logits w x + b: the smallest L-inf change that flips x is
  # |margin| / ||w_0 - w_1||_1 (every pixel moves by it against the sign of w_y - w_other).
  key = jax.random.key(3)
  w = jax.random.normal(key, (2, 16))
  x = 0.5 + 0.05 * jax.random.normal(jax.random.fold_in(key, 1), (8,) + SHAPE)
  gap = x.reshape(8, -1) @ (w[0] - w[1])
  b = jnp.array([0.0, float(jnp.median(gap))])  # about half the examples in each class
  logits = x.reshape(8, -1) @ w.T + b
  labels = jnp.argmax(logits, axis=1)
  d_min = jnp.abs(logits[:, 0] - logits[:, 1]) / jnp.abs(w[0] - w[1]).sum()
  assert 0 < float(d_min.min()) and float(d_min.max()) < 0.25  # flips stay inside [0, 1]
  energy = linear_energy(w, b)
  loss = lambda key, x_, y: adversarial.attack_loss(
    adversarial.energy_logits(energy, x_, 2), y, "margin"
  )
  predict = lambda z: int(jnp.argmax(adversarial.energy_logits(energy, z, 2), axis=1)[0])
  config = adversarial.PGDConfig(norm="linf", num_steps=50)
  for i in range(8):
    xi, yi, d = x[i : i + 1], labels[i : i + 1], float(d_min[i])
    above = adversarial.pgd(jax.random.key(i), loss, xi, yi, d * 1.01, config)
    below = adversarial.pgd(jax.random.key(i), loss, xi, yi, d * 0.99, config)
    assert predict(above) != int(yi[0]), i  # found just above the minimal distance
    assert predict(below) == int(yi[0]), i  # and not below it


def test_bpda_gradient_is_the_classifier_gradient_at_the_purified_points():
  means = jax.random.uniform(jax.random.key(4), (3,) + SHAPE)
  energy = gaussian_classes_energy(means)
  x = jax.random.uniform(jax.random.key(5), (5,) + SHAPE)
  labels = jnp.array([0, 1, 2, 0, 1])
  key = jax.random.key(6)

  def bpda_loss(x_):
    logits = adversarial.purified_logits(key, energy, x_, 3, PURIFIER, 0.2, bpda=True)
    return jnp.sum(adversarial.attack_loss(logits, labels))

  refined = adversarial.purify(key, energy, x, 3, PURIFIER, 0.2)  # [K, B, ...]
  assert float(jnp.abs(refined - x[None]).max()) > 1e-3  # the defence moved the inputs

  def loss_at_refined(r):  # the classifier's loss as a function of the K refined images
    ids = jnp.repeat(jnp.arange(3), 5)
    logits = -energy(r.reshape((15,) + SHAPE), ids).reshape(3, 5).T
    return jnp.sum(adversarial.attack_loss(logits, labels))

  expected = jax.grad(loss_at_refined)(refined).sum(axis=0)
  np.testing.assert_allclose(jax.grad(bpda_loss)(x), expected, rtol=1e-5, atol=1e-7)
  # Full backprop differs from BPDA here: the chains' Jacobian is not the identity.
  full = jax.grad(
    lambda x_: jnp.sum(
      adversarial.attack_loss(
        adversarial.purified_logits(key, energy, x_, 3, PURIFIER, 0.2, bpda=False), labels
      )
    )
  )(x)
  assert float(jnp.abs(full - expected).max()) > 1e-4


def test_purification_keeps_a_clean_well_classified_input_in_its_class_and_its_box():
  means = jnp.stack([jnp.full(SHAPE, v) for v in (0.2, 0.5, 0.8)])
  energy = gaussian_classes_energy(means)
  labels = jnp.array([0, 1, 2] * 4)
  x = jnp.clip(means[labels] + 0.05 * jax.random.normal(jax.random.key(7), (12,) + SHAPE), 0, 1)
  logits = adversarial.purified_logits(jax.random.key(8), energy, x, 3, PURIFIER, 0.1)
  np.testing.assert_array_equal(jnp.argmax(logits, axis=1), labels)
  refined = adversarial.purify(jax.random.key(8), energy, x, 3, PURIFIER, 0.1)
  assert float(jnp.abs(refined - x[None]).max()) <= 0.1 + 1e-6  # the +-delta box holds
  assert float(jnp.abs(refined - x[None]).max()) > 0.05  # ... and binds: it did move


def test_bad_attack_settings_are_clear_errors():
  with pytest.raises(ValueError, match="unknown attack norm 'l3'"):
    adversarial.PGDConfig(norm="l3")
  with pytest.raises(ValueError, match="steps must be an int >= 1"):
    adversarial.PGDConfig(num_steps=0)
  with pytest.raises(ValueError, match="epsilons must be finite and >= 0"):
    adversarial.pgd(
      jax.random.key(0), None, jnp.zeros((1, 2)), jnp.zeros(1, int), -0.1, adversarial.PGDConfig()
    )
  with pytest.raises(ValueError, match="unknown attack loss"):
    adversarial.attack_loss(jnp.zeros((1, 2)), jnp.zeros(1, int), "hinge")
  for field, value, message in (
    ("linf_epsilons", (0.1, -0.2), "linf_epsilons: attack epsilons must be finite and >= 0"),
    ("attack_norms", ("l1",), "attack_norms: unknown"),
    ("attack_steps", 0, "attack_steps must be an int >= 1"),
    ("attack_restarts", 0, "attack_restarts must be an int >= 1"),
    ("purify_delta", -1.0, "purify_delta must be >= 0"),
    ("sanity_steps", (50, 10), "sanity_steps must be two step counts"),
  ):
    with pytest.raises(ValueError, match=message):
      robustness.RobustnessConfig(**{field: value})


def test_the_report_of_a_separable_toy_classifier_passes_its_sanity_checks():
  # Three classes of 4x4 images around constant means 0.2 / 0.5 / 0.8: the Bayes classifier is
  # the energy itself. At L-inf 0.3 every class mean can reach its neighbour's, so an undefended
  # classifier falls to ~0; at 0.05 almost nothing is fooled.
  means = jnp.stack([jnp.full(SHAPE, v) for v in (0.2, 0.5, 0.8)])
  energy = gaussian_classes_energy(means)
  labels = np.arange(30) % 3
  images = np.clip(means[labels] + 0.02 * jax.random.normal(jax.random.key(9), (30,) + SHAPE), 0, 1)
  options = robustness.RobustnessConfig(
    attack_norms=("linf",),
    linf_epsilons=(0.0, 0.05, 0.3),
    num_attack_images=30,
    num_adaptive_images=12,
    attack_steps=5,
    adaptive_attack_steps=3,
    attack_restarts=2,
    eot_samples=2,
    purify_steps=3,
    sanity_steps=(2, 6),
    attack_batch_size=16,
  )
  report = robustness.robustness_report(
    jax.random.key(0), energy, images, labels, 3, PURIFIER, options, softmax_energy_fn=energy
  )
  curves = report["linf"]
  assert set(curves) == set(robustness.CURVES)
  for name, entries in curves.items():
    assert [e["epsilon"] for e in entries] == [0.0, 0.05, 0.3], name
    assert entries[0]["accuracy"] == 1.0, name  # clean, well separated
    assert entries[-1]["accuracy"] <= 0.1, name  # every class is reachable at 0.3
    adaptive = name in robustness.CURVES[3:]
    assert entries[0]["num_images"] == (12 if adaptive else 30)
  for j in range(3):  # an image survives every attack only if it survives each one
    each = [
      curves[c][j].get("accuracy_on_adaptive_images", curves[c][j]["accuracy"])
      for c in robustness.DEFENCE_ATTACKS
    ]
    assert curves["ebm_purified_any_attack"][j]["accuracy"] <= min(each)
  assert curves["ebm"][1]["accuracy"] == 1.0  # the closest wrong class is 0.15 away
  assert report["sanity"]["undefended_at_largest_epsilon"]["passed"]
  assert report["sanity"]["more_steps_never_raise_accuracy"]["passed"]
  assert "accuracy_on_adaptive_images" in curves["ebm"][0]


def test_the_softmax_objective_trains_the_same_network_as_a_classifier():
  # Two classes of 4x4 images, dark and bright: a few steps of cross-entropy separate them.
  model = ConvEnergy(features=(4,), num_classes=2)
  config = train.TrainConfig(objective="softmax", conditional=True, num_classes=2)
  optimizer = optax.adam(1e-2)
  state = train.create_train_state(jax.random.key(0), model, optimizer, config, SHAPE)
  step = jax.jit(train.make_train_step(model, optimizer, config))
  labels = jnp.arange(32) % 2
  images = jnp.where(labels[:, None, None, None] == 1, 0.8, 0.2) + jnp.zeros((32,) + SHAPE)
  first = None
  for _ in range(30):
    state, metrics = step(state, {"image": images, "label": labels})
    first = first or float(metrics["loss"])
  assert float(metrics["loss"]) < 0.5 * first and float(metrics["train_accuracy"]) == 1.0
  assert float(metrics["energy_pos"]) < float(metrics["energy_neg"])
  assert int(state.replay.size) == 0  # no chains, nothing replayed
  with pytest.raises(ValueError, match="objective='softmax' need a conditional model"):
    train.TrainConfig(objective="softmax")
  with pytest.raises(ValueError, match="objective must be one of"):
    dataclasses.replace(config, objective="hinge")
