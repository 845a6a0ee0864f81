"""The IGEBM optimiser and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jebm import config as config_lib
from jebm import losses, optim


def test_clip_by_second_moment_bounds_each_element():
  tx = optim.clip_by_second_moment(b2=0.5, clip_std=3.0, clip_offset=0.1)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  g1, state = update({"w": jnp.array([1.0, -0.05, -2.0])}, state)
  np.testing.assert_allclose(g1["w"], [0.1, -0.05, -0.1])  # first step: ±clip_offset
  nu_hat = (0.5 * np.array([0.1, 0.05, 0.1]) ** 2) / (1 - 0.5)  # bias-corrected ν after step 1
  g2, _ = update({"w": jnp.array([10.0, 0.0, -10.0])}, state)
  np.testing.assert_allclose(g2["w"], [1, 0, -1] * (3 * np.sqrt(nu_hat) + 0.1), rtol=1e-5)


def test_igebm_adam_without_clipping_equals_adam_b1_zero():
  grads = {"w": jnp.array([0.01, -0.02])}
  params = {"w": jnp.zeros(2)}
  ours, ref = optim.igebm_adam(1e-3, clip_offset=1.0), optax.adam(1e-3, b1=0.0, b2=0.999)
  s1, s2 = ours.init(params), ref.init(params)
  for _ in range(3):
    u1, s1 = ours.update(grads, s1, params)
    u2, s2 = ref.update(grads, s2, params)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_contrastive_divergence_terms():
  e_pos, e_neg = jnp.array([1.0, 3.0]), jnp.array([-1.0, 1.0])
  loss, aux = losses.contrastive_divergence(e_pos, e_neg, l2_coeff=0.5)
  assert float(aux["loss_cd"]) == pytest.approx(2.0 - 0.0)
  assert float(aux["loss_l2"]) == pytest.approx(0.5 * (5.0 + 1.0))
  assert float(loss) == pytest.approx(5.0)
  # d loss / d e_pos = 1/B + 2 * l2 * e_pos / B, d loss / d e_neg = -1/B + 2 * l2 * e_neg / B
  g_pos, g_neg = jax.grad(
    lambda a, b: losses.contrastive_divergence(a, b, l2_coeff=0.5)[0], argnums=(0, 1)
  )(e_pos, e_neg)
  np.testing.assert_allclose(g_pos, [1.0, 2.0])
  np.testing.assert_allclose(g_neg, [-1.0, 0.0])
  with pytest.raises(ValueError, match=r"\[B\]"):
    losses.contrastive_divergence(e_pos[:, None], e_neg, l2_coeff=1.0)


def test_learning_rate_schedules():
  constant = config_lib.learning_rate(
    config_lib.Config(learning_rate=1e-3, warmup_steps=100, lr_schedule="constant")
  )
  np.testing.assert_allclose([constant(s) for s in (0, 50, 100, 5000)], [0, 5e-4, 1e-3, 1e-3])
  cosine = config_lib.learning_rate(
    config_lib.Config(learning_rate=1e-3, warmup_steps=0, lr_schedule="cosine", num_steps=1000)
  )
  np.testing.assert_allclose([cosine(s) for s in (0, 500, 1000)], [1e-3, 5e-4, 0], atol=1e-9)
  with pytest.raises(ValueError, match="lr_schedule"):
    config_lib.learning_rate(config_lib.Config(lr_schedule="linear"))


def test_num_steps_is_resumable_only_with_a_constant_learning_rate():
  constant = config_lib.Config(lr_schedule="constant")
  shorter = config_lib.Config(lr_schedule="constant", num_steps=5)
  assert config_lib.mismatched_fields(constant, shorter) == {}
  cosine = config_lib.Config(lr_schedule="cosine")
  longer = config_lib.Config(lr_schedule="cosine", num_steps=5)
  assert config_lib.mismatched_fields(cosine, longer) == {"num_steps": (cosine.num_steps, 5)}
