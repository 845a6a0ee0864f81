"""Contrastive divergence with an L2 energy penalty (IGEBM's training objective)."""

from typing import Optional

import jax
import jax.numpy as jnp
import optax


def contrastive_divergence(
  e_pos: jax.Array,
  e_neg: jax.Array,
  *,
  l2_coeff: float,
  e_kl: Optional[jax.Array] = None,
  kl_coeff: float = 1.0,
):
  """IGEBM loss: push data energies down and sample energies up.

  loss = mean(E(x+)) - mean(E(x-)) + l2_coeff * mean(E(x+)^2 + E(x-)^2) [+ kl_coeff * mean(e_kl)]

  Gradients flow into the model through both energies; the samples x- must be stop-gradient'ed by
  the caller. The optional KL term (the paper code's ``zero_kl=False`` mode) is the energy of
  samples that are differentiable through the last sampler steps, scored by a stop-gradient copy of
  the model: minimising it moves the sampler's output towards low energy, so that the sampler
  (not the energy) is trained to match the model.

  Args:
    e_pos: [B] energies of data.
    e_neg: [B] energies of (stop-gradient) Langevin samples.
    l2_coeff: weight of the L2 penalty that keeps energies near zero (paper: 1.0 on CIFAR-10).
    e_kl: optional [B] energies E_{stop_grad(θ)}(x-(θ)) for the KL term.
    kl_coeff: weight of the KL term.

  Returns:
    (loss scalar, aux dict of scalars: "loss_cd", "loss_l2", "loss_kl").
  """
  if e_pos.ndim != 1 or e_neg.ndim != 1:
    raise ValueError(
      f"contrastive_divergence needs [B] energies, got {e_pos.shape} and {e_neg.shape}"
    )
  loss_cd = jnp.mean(e_pos) - jnp.mean(e_neg)
  loss_l2 = l2_coeff * (jnp.mean(jnp.square(e_pos)) + jnp.mean(jnp.square(e_neg)))
  loss_kl = jnp.zeros(()) if e_kl is None else kl_coeff * jnp.mean(e_kl)
  return loss_cd + loss_l2 + loss_kl, {"loss_cd": loss_cd, "loss_l2": loss_l2, "loss_kl": loss_kl}


def label_cross_entropy(class_energies: jax.Array, labels: jax.Array):
  """Cross-entropy of the EBM as a classifier, p(y | x) = softmax_y(-E(x, y)) (JEM's term).

  Args:
    class_energies: [B, K] energies E(x, y) of each example under every class.
    labels: [B] int true classes.

  Returns:
    (mean cross-entropy scalar, accuracy of argmin_y E(x, y) as a scalar).
  """
  if class_energies.ndim != 2 or labels.shape != class_energies.shape[:1]:
    raise ValueError(
      f"label_cross_entropy needs energies [B, K] and labels [B], got {class_energies.shape} "
      f"and {labels.shape}"
    )
  loss = optax.softmax_cross_entropy_with_integer_labels(-class_energies, labels).mean()
  accuracy = jnp.mean(jnp.argmin(class_energies, axis=1) == labels)
  return loss, accuracy
