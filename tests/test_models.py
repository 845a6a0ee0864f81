"""Tests for jebm.models: shapes, conditioning, input errors, spectral normalisation, presets."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import models
from jebm.energy import from_model
from jebm.models import (
  ConvEnergy,
  MLPEnergy,
  ResNetEnergy,
  SNConv,
  SNDense,
  get_model,
  resnet32,
  spectral_normalize,
)

# The 'rbg' PRNG compiles about twice as fast as threefry on CPU; models accept any key type.
KEY = jax.random.key(0, impl="rbg")
TINY_RESNET = dict(blocks=((8, True), (16, True), (16, False)), stem_features=8)
IDS = jnp.array([0, 1, 2, 1])

# One small conditional, spectrally normalised instance per architecture, initialised once per
# module (XLA compilation dominates the cost of these tests on CPU).
CONDITIONAL = {
  "mlp": (MLPEnergy(hidden_sizes=(16, 16), num_classes=3, spectral_norm=True), (4, 2)),
  "conv": (ConvEnergy(features=(8, 16), num_classes=3, spectral_norm=True), (4, 8, 8, 1)),
  "resnet": (ResNetEnergy(num_classes=3, **TINY_RESNET), (4, 8, 8, 3)),
}


def _images(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def _num_params(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _randomised(variables, scale=0.1):
  """Perturb all params deterministically (condition weights start at zero, so that y matters)."""

  def perturb(a):
    return a + scale * jnp.sin(1.7 * jnp.arange(a.size, dtype=a.dtype) + 0.3).reshape(a.shape)

  return {**variables, "params": jax.tree.map(perturb, variables["params"])}


@functools.cache
def _setup(name):
  """(model, x, variables with randomised params) for CONDITIONAL[name], built once."""
  model, shape = CONDITIONAL[name]
  x = _images(shape)
  return model, x, jax.jit(lambda key: _randomised(model.init(key, x, IDS)))(KEY)


@pytest.fixture(params=sorted(CONDITIONAL))
def conditional(request):
  return _setup(request.param)


# ---------------------------------------------------------------- shapes and conditioning


@pytest.mark.parametrize(
  "model, shape",
  [
    (MLPEnergy(), (4, 2)),
    (MLPEnergy(hidden_sizes=(16,), spectral_norm=True, activation="leaky_relu"), (4, 5)),
    (ConvEnergy(), (4, 28, 28, 1)),
    (ConvEnergy(activation="leaky_relu", spectral_norm=True), (4, 64, 64, 1)),
    (ConvEnergy(features=(8, 8, 8)), (4, 9, 13, 1)),
    (ResNetEnergy(**TINY_RESNET), (4, 16, 16, 3)),
    (ResNetEnergy(dtype=jnp.bfloat16, **TINY_RESNET), (4, 8, 8, 3)),
    (MLPEnergy(dtype=jnp.bfloat16), (4, 2)),
  ],
)
def test_unconditional_shapes_and_dtypes(model, shape):
  """Energies are [B] float32 and params float32, whatever the computation dtype."""
  x = jnp.ones(shape)
  variables = jax.eval_shape(model.init, KEY, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
  assert ("spectral" in variables) == model.spectral_norm
  energy = jax.eval_shape(model.apply, variables, x)
  assert energy.shape == (4,) and energy.dtype == jnp.float32


def test_int_and_float_conditions_share_one_path(conditional):
  """Int ids [B] equal their one-hot float vectors [B, K]; the condition changes the energy."""
  model, x, variables = conditional
  e_int = model.apply(variables, x, IDS)
  e_float = model.apply(variables, x, jax.nn.one_hot(IDS, 3))
  e_other = model.apply(variables, x, (IDS + 1) % 3)
  e_soft = model.apply(variables, x, jnp.full((4, 3), 0.5))  # continuous conditions
  assert e_int.shape == e_soft.shape == (4,) and e_int.dtype == jnp.float32
  assert np.all(np.isfinite(e_int)) and np.all(np.isfinite(e_soft))
  np.testing.assert_allclose(e_int, e_float, rtol=1e-5, atol=1e-5)
  assert not np.allclose(e_int, e_other)


def test_examples_do_not_interact(conditional):
  """E(x)[0] ignores x[1:]: the same energy alone, and zero gradient w.r.t. other examples."""
  model, x, variables = conditional
  energy = model.apply(variables, x, IDS)
  np.testing.assert_allclose(
    model.apply(variables, x[:1], IDS[:1]), energy[:1], rtol=1e-5, atol=1e-5
  )
  grad = jax.jit(jax.grad(lambda x: model.apply(variables, x, IDS)[0]))(x)
  assert np.any(grad[0] != 0) and np.all(grad[1:] == 0)


# ---------------------------------------------------------------- errors
# Errors are raised while tracing, so abstract variables (jax.eval_shape) are enough.


def test_condition_errors():
  x = jnp.ones((2, 3))
  conditional = MLPEnergy(hidden_sizes=(4,), num_classes=3)
  with pytest.raises(ValueError, match="conditional.*needs y"):
    jax.eval_shape(conditional.init, KEY, x)
  with pytest.raises(ValueError, match="unconditional"):
    jax.eval_shape(MLPEnergy(hidden_sizes=(4,)).init, KEY, x, jnp.array([0, 1]))
  with pytest.raises(ValueError, match=r"shape \(2, 3\), got \(2, 4\)"):
    jax.eval_shape(conditional.init, KEY, x, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match=r"int class ids y must have shape \(2,\)"):
    jax.eval_shape(conditional.init, KEY, x, jnp.zeros((2, 1), jnp.int32))
  with pytest.raises(ValueError, match=r"int class ids y must have shape \(2,\)"):
    jax.eval_shape(conditional.init, KEY, x, jnp.zeros((3,), jnp.int32))


def test_input_shape_errors_name_expected_and_received():
  model = ConvEnergy(features=(8,))
  variables = jax.eval_shape(model.init, KEY, jnp.ones((1, 8, 8, 1)))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\].*\(8, 8, 1\)"):
    jax.eval_shape(model.apply, variables, jnp.ones((8, 8, 1)))
  with pytest.raises(
    ValueError, match=r"expected input of shape \(\.\.\., 1\).*got shape \(1, 8, 8, 3\)"
  ):
    jax.eval_shape(model.apply, variables, jnp.ones((1, 8, 8, 3)))
  mlp = MLPEnergy(hidden_sizes=(4,))
  mlp_vars = jax.eval_shape(mlp.init, KEY, jnp.ones((1, 2)))
  with pytest.raises(ValueError, match=r"\(\.\.\., 2\).*got shape \(1, 5\)"):
    jax.eval_shape(mlp.apply, mlp_vars, jnp.ones((1, 5)))
  with pytest.raises(ValueError, match=r"\[B, D\]"):
    jax.eval_shape(mlp.apply, mlp_vars, jnp.ones((1, 2, 1)))
  with pytest.raises(ValueError, match="needs H, W >= 4"):
    jax.eval_shape(ResNetEnergy(**TINY_RESNET).init, KEY, jnp.ones((1, 2, 2, 3)))


def test_registry_and_activation_errors():
  assert isinstance(get_model("mlp", hidden_sizes=(4,)), MLPEnergy)
  assert isinstance(get_model("conv"), ConvEnergy)
  for name in ["resnet32", "resnet32_large", "resnet32_wider", "resnet128"]:
    assert isinstance(get_model(name, num_classes=10), ResNetEnergy)
  with pytest.raises(ValueError, match="known: .*resnet32"):
    get_model("vgg")
  with pytest.raises(ValueError, match="unknown activation"):
    jax.eval_shape(MLPEnergy(activation="tanhh").init, KEY, jnp.ones((1, 2)))


# ---------------------------------------------------------------- spectral normalisation


class _Kernel(nn.Module):
  """Returns its spectrally normalised kernel, to inspect spectral_normalize directly."""

  shape: tuple
  clip: bool = False

  @nn.compact
  def __call__(self, update_stats=False):
    kernel = self.param("kernel", nn.initializers.normal(1.0), self.shape)
    return spectral_normalize(self, kernel, update_stats=update_stats, clip=self.clip)


def _top_singular_value(kernel):
  kernel = np.asarray(kernel)
  return np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]


def test_spectral_norm_converges_to_unit_top_singular_value():
  """Test 7: after 50 update_stats=True calls, |s_max(W / sigma) - 1| < 1e-2."""
  module = _Kernel((3, 3, 16, 32))
  variables = module.init(KEY)
  assert set(variables) == {"params", "spectral"}
  assert jax.tree.map(jnp.shape, variables["spectral"]) == {"u": (32,), "v": (144,), "sigma": ()}
  update = jax.jit(lambda v: module.apply(v, update_stats=True, mutable=["spectral"]))
  for _ in range(50):
    kernel_during_update, state = update(variables)
    variables = {**variables, **state}
  kernel = module.apply(variables)
  assert abs(_top_singular_value(kernel) - 1.0) < 1e-2
  # An update call computes the same kernel as a pure call with the state it wrote.
  np.testing.assert_array_equal(kernel_during_update, kernel)
  raw = variables["params"]["kernel"]
  np.testing.assert_allclose(variables["spectral"]["sigma"], _top_singular_value(raw), rtol=1e-2)


def test_spectral_norm_through_a_dense_layer():
  """Same check through SNDense's public apply: the layer applied to I is its kernel."""
  layer = SNDense(24, use_bias=False, spectral_norm=True)
  eye = jnp.eye(40)
  variables = layer.init(KEY, eye)
  update = jax.jit(lambda v: layer.apply(v, eye, update_stats=True, mutable=["spectral"])[1])
  for _ in range(50):
    variables = {**variables, **update(variables)}
  assert abs(_top_singular_value(layer.apply(variables, eye)) - 1.0) < 1e-2


def test_spectral_clip_only_shrinks_large_kernels():
  """clip=True divides by max(sigma, 1): a kernel with norm < 1 passes unchanged."""
  module = _Kernel((4, 4), clip=True)
  variables = module.init(KEY)
  small = {**variables, "params": {"kernel": 0.01 * variables["params"]["kernel"]}}
  np.testing.assert_allclose(module.apply(small), small["params"]["kernel"], rtol=1e-6)
  sigma = variables["spectral"]["sigma"]
  assert sigma > 1.0
  np.testing.assert_allclose(
    module.apply(variables), variables["params"]["kernel"] / sigma, rtol=1e-6
  )


def test_pure_call_is_pure_differentiable_and_jittable():
  model, x, variables = _setup("conv")
  # update_stats=False writes nothing even when 'spectral' is mutable.
  e1, state = model.apply(variables, x, IDS, update_stats=False, mutable=["spectral"])
  jax.tree.map(np.testing.assert_array_equal, state["spectral"], variables["spectral"])
  np.testing.assert_array_equal(model.apply(variables, x, IDS), e1)
  np.testing.assert_allclose(jax.jit(model.apply)(variables, x, IDS), e1, rtol=1e-5, atol=1e-5)
  grad = jax.jit(jax.grad(lambda x: model.apply(variables, x, IDS).sum()))(x)
  assert grad.shape == x.shape and np.all(np.isfinite(grad)) and np.any(grad != 0)
  # update_stats=True writes new vectors, and needs 'spectral' to be mutable.
  e_upd, new_state = model.apply(variables, x, IDS, update_stats=True, mutable=["spectral"])
  changed = jax.tree.map(
    lambda a, b: not np.array_equal(a, b), new_state["spectral"], variables["spectral"]
  )
  assert any(jax.tree.leaves(changed))
  np.testing.assert_allclose(
    model.apply({**variables, **new_state}, x, IDS), e_upd, rtol=1e-6, atol=1e-6
  )
  with pytest.raises(Exception, match="spectral"):
    model.apply(variables, x, IDS, update_stats=True)


def test_params_gradient_flows_through_update_call():
  """The trainer's call: grad w.r.t. params of apply(update_stats=True, mutable=['spectral'])."""
  model, x, variables = _setup("mlp")

  def loss(params):
    energy, state = model.apply(
      {**variables, "params": params}, x, IDS, update_stats=True, mutable=["spectral"]
    )
    return energy.mean(), state

  grads, state = jax.grad(loss, has_aux=True)(variables["params"])
  assert jax.tree.structure(state["spectral"]) == jax.tree.structure(variables["spectral"])
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.any(grads["dense_0"]["kernel"] != 0)
  assert np.any(grads["cond_gain_0"]["cond_kernel"] != 0)


# ---------------------------------------------------------------- presets


def test_resnet32_init_and_param_count():
  x = jnp.ones((1, 32, 32, 3))
  model = resnet32(num_classes=10)
  energy, variables = jax.jit(model.init_with_output)(KEY, x, jnp.array([3]))
  assert energy.shape == (1,)
  # Convs: stem 3*128*9; blocks 2x(2*128*128*9), 128*256*9 + 256*256*9 + 128*256, 3x(2*256*256*9).
  convs = (
    3 * 128 * 9 + 4 * 128 * 128 * 9 + 128 * 256 * 9 + 256 * 256 * 9 + 128 * 256 + 6 * 256 * 256 * 9
  )
  n = _num_params(variables["params"])
  assert convs < n < convs * 1.02, n
  assert "spectral" in variables  # spectral norm is on by default, as in the paper


@pytest.mark.parametrize(
  "name, num_classes, shape, low, high",
  [
    ("resnet32_large", None, (1, 32, 32, 3), 17e6, 18e6),
    ("resnet32_wider", 10, (1, 32, 32, 3), 38e6, 40e6),
    ("resnet128", 1000, (1, 128, 128, 3), 19e6, 21e6),
  ],
)
def test_large_presets_by_shape_only(name, num_classes, shape, low, high):
  model = get_model(name, num_classes=num_classes)
  y = None if num_classes is None else jnp.zeros((shape[0],), jnp.int32)
  abstract = jax.eval_shape(model.init, KEY, jnp.ones(shape), y)
  assert low < _num_params(abstract["params"]) < high
  energy = jax.eval_shape(model.apply, abstract, jnp.ones(shape), y)
  assert energy.shape == (1,) and energy.dtype == jnp.float32


def test_flat_exports_and_conv_layer_shape():
  for name in models.__all__:
    assert hasattr(models, name)
  layer = SNConv(4, strides=2, spectral_norm=True)
  x = jnp.ones((1, 9, 9, 2))
  variables = jax.eval_shape(layer.init, KEY, x)
  assert jax.eval_shape(layer.apply, variables, x).shape == (1, 5, 5, 4)
  assert variables["spectral"]["v"].shape == (3 * 3 * 2,)


def test_random_conditional_gains_make_classes_differ_at_init():
  x = jnp.ones((3, 5))
  y = jnp.array([0, 1, 2])
  for std, differ in ((0.0, False), (0.1, True)):
    model = MLPEnergy(hidden_sizes=(16,), num_classes=3, cond_gain_init_std=std)
    params = model.init(jax.random.PRNGKey(0), x, y)
    kernel = params["params"]["cond_gain_0"]["cond_kernel"]
    assert float(jnp.std(kernel)) == pytest.approx(std, rel=0.3, abs=1e-9)
    energies = model.apply(params, x, y)
    assert bool(jnp.any(energies != energies[0])) == differ


def test_forward_mode_and_hessians_of_every_model(conditional):
  """jax.jvp, jax.jacfwd and jax.hessian through each model's energy, bound by ``from_model``
  (on the CPU: with the fast convolution gradients), agree with reverse mode."""
  model, x, variables = conditional
  energy = from_model(model.apply, variables)
  one = lambda xi: energy(xi[None], IDS[:1])[0]
  x0, v = x[0], jnp.cos(jnp.arange(x[0].size, dtype=jnp.float32)).reshape(x[0].shape)
  value, slope = jax.jit(lambda a, t: jax.jvp(one, (a,), (t,)))(x0, v)
  grad = jax.jit(jax.grad(one))(x0)
  np.testing.assert_allclose(value, one(x0), rtol=1e-6)
  np.testing.assert_allclose(slope, jnp.vdot(grad, v), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.jacfwd(one))(x0), grad, rtol=1e-4, atol=1e-6)
  hessian = jax.jit(jax.hessian(one))(x0).reshape(x0.size, x0.size)
  hvp = jax.jit(lambda a, t: jax.jvp(jax.grad(one), (a,), (t,))[1])(x0, v).reshape(-1)
  np.testing.assert_allclose(hessian, hessian.T, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(hessian @ v.reshape(-1), hvp, rtol=1e-3, atol=1e-5)
