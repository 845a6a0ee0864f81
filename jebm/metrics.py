"""Sample-quality and detection metrics on plain arrays: AUROC, FID, KID and Inception Score.

No model code lives here: FID, KID and IS take features or class probabilities from any network
(jebm's own judge classifier in ``jebm.eval.judge``, or a user's Inception net via
``jebm.eval.judge.load_feature_fn``). Inputs may be numpy or jax arrays; results are Python
floats, computed in float64 on the host.
"""

import numpy as np
import scipy.stats


def _as_2d(feats, name):
  feats = np.asarray(feats, np.float64)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f"{name} must have shape [N, D] with N >= 2, got shape {feats.shape}")
  if not np.all(np.isfinite(feats)):
    raise ValueError(f"{name} contains NaN or infinite values")
  return feats


def _check_same_dim(feats_a, feats_b):
  if feats_a.shape[1] != feats_b.shape[1]:
    raise ValueError(f"feature sets differ in dimension: {feats_a.shape[1]} vs {feats_b.shape[1]}")


def auroc(scores_in, scores_out) -> float:
  """Area under the ROC curve for telling in-distribution from out-of-distribution examples.

  A higher score means "more in-distribution" (for an EBM: score = -E(x)). This is the
  Mann-Whitney statistic P(s_in > s_out) + P(s_in = s_out) / 2, so ties count one half: 1.0 means
  every in-distribution score is above every OOD score, 0.5 means no separation.

  Args:
    scores_in: [N] scores of in-distribution examples (N >= 1).
    scores_out: [M] scores of out-of-distribution examples (M >= 1).

  Returns:
    AUROC in [0, 1].

  Raises:
    ValueError: an empty set or a NaN score (±inf is fine: it ranks as an extreme score).
  """
  s_in = np.asarray(scores_in, np.float64).reshape(-1)
  s_out = np.asarray(scores_out, np.float64).reshape(-1)
  if s_in.size == 0 or s_out.size == 0:
    raise ValueError(f"auroc needs non-empty score sets, got {s_in.size} and {s_out.size} scores")
  if np.isnan(s_in).any() or np.isnan(s_out).any():
    raise ValueError("auroc: scores contain NaN (did the energies diverge?)")
  ranks = scipy.stats.rankdata(np.concatenate([s_in, s_out]))  # Ties get their average rank.
  n_in, n_out = s_in.size, s_out.size
  u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
  return float(u / (n_in * n_out))


def _sqrt_psd(matrix):
  """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped)."""
  vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
  """Fréchet (2-Wasserstein²) distance between N(mean_a, cov_a) and N(mean_b, cov_b).

  ||mean_a - mean_b||² + tr(cov_a + cov_b - 2 (cov_a cov_b)^½). The trace term is computed as the
  nuclear norm (sum of singular values) of cov_a^½ cov_b^½, which equals tr((cov_a cov_b)^½) but
  stays real and accurate for singular covariances (fewer examples than dimensions, dead
  features): a matrix square root of the product would amplify rounding near zero eigenvalues.

  Args:
    mean_a, mean_b: [D] means.
    cov_a, cov_b: [D, D] symmetric positive semi-definite covariances.

  Returns:
    The distance (≥ 0 up to rounding).
  """
  mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
  cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
  trace_sqrt = np.linalg.svd(_sqrt_psd(cov_a) @ _sqrt_psd(cov_b), compute_uv=False).sum()
  diff = mean_a - mean_b
  return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def frechet_distance(feats_a, feats_b) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets (FID on Inception features).

  Args:
    feats_a: [N, D] features of one set (e.g. generated samples), N >= 2.
    feats_b: [M, D] features of the other (e.g. real test images), M >= 2.

  Returns:
    ||μ_a - μ_b||² + tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^½) with unbiased (N - 1) covariances; 0 for
    identical sets. Like FID it is biased upwards for small N: compare values at equal N.
  """
  feats_a, feats_b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
  _check_same_dim(feats_a, feats_b)
  return gaussian_frechet_distance(
    feats_a.mean(0), np.cov(feats_a, rowvar=False), feats_b.mean(0), np.cov(feats_b, rowvar=False)
  )


def _polynomial_kernel(x, y):
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(x, y):
  """Unbiased MMD² estimate between samples x [m, D] and y [m, D] with the cubic kernel."""
  m = x.shape[0]
  k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
  off_diag = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
  return off_diag(k_xx) + off_diag(k_yy) - 2.0 * k_xy.mean()


def kernel_inception_distance(feats_a, feats_b, *, subset_size=1000, num_subsets=100, seed=0):
  """Kernel Inception Distance: unbiased MMD² with the kernel k(x, y) = (x·y / D + 1)³.

  As in Bińkowski et al. (2018): the estimate is averaged over ``num_subsets`` random subsets of
  ``min(subset_size, N, M)`` examples drawn without replacement from each set. Unlike FID it is
  unbiased, so it is ≈ 0 (and may be slightly negative) for two samples of one distribution.

  Args:
    feats_a: [N, D] features of one set, N >= 2.
    feats_b: [M, D] features of the other, M >= 2.
    subset_size: examples per subset (capped at N and M).
    num_subsets: number of subsets.
    seed: seed of the subset draws (same seed, same result).

  Returns:
    (mean, std) of the per-subset MMD² estimates, as floats.
  """
  feats_a, feats_b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
  _check_same_dim(feats_a, feats_b)
  if subset_size < 2 or num_subsets < 1:
    raise ValueError(
      f"KID needs subset_size >= 2 and num_subsets >= 1, got {subset_size}, {num_subsets}"
    )
  m = min(subset_size, feats_a.shape[0], feats_b.shape[0])
  rng = np.random.default_rng(seed)
  estimates = [
    _unbiased_mmd2(
      feats_a[rng.choice(feats_a.shape[0], m, replace=False)],
      feats_b[rng.choice(feats_b.shape[0], m, replace=False)],
    )
    for _ in range(num_subsets)
  ]
  return float(np.mean(estimates)), float(np.std(estimates))


def inception_score(probs, splits=10, *, seed=0):
  """Inception Score exp(E_x KL(p(y|x) || p(y))) of classifier probabilities on samples.

  As in Salimans et al. (2016): the N examples are cut into ``splits`` chunks, the score is
  computed per chunk with that chunk's marginal p(y), and the mean and std over chunks are
  returned. It ranges from 1 (every sample gets the same prediction) to K (confident predictions
  spread evenly over all K classes). The examples are shuffled (with ``seed``) before they are cut,
  so that input sorted by class (conditional samples usually are) does not give each chunk one
  class and a score near 1.

  Args:
    probs: [N, K] class probabilities, rows summing to 1 (e.g. a softmax), N >= splits.
    splits: number of chunks.
    seed: seed of the shuffle (same seed, same result).

  Returns:
    (mean, std) over chunks, as floats.
  """
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2 or probs.shape[0] < splits or splits < 1:
    raise ValueError(
      f"inception_score needs probs [N, K] with N >= splits >= 1, got shape"
      f" {probs.shape} and splits={splits}"
    )
  if np.any(probs < 0) or not np.allclose(probs.sum(1), 1.0, atol=1e-3):
    raise ValueError("inception_score needs probabilities: non-negative rows summing to 1")
  probs = probs[np.random.default_rng(seed).permutation(len(probs))]
  scores = []
  for chunk in np.array_split(probs, splits):
    marginal = chunk.mean(0, keepdims=True)
    log_ratio = np.log(np.where(chunk > 0, chunk, 1.0)) - np.log(np.where(chunk > 0, marginal, 1.0))
    scores.append(np.exp(np.mean(np.sum(chunk * log_ratio, axis=1))))
  return float(np.mean(scores)), float(np.std(scores))


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
  """Counts int64 [K, K]: entry (i, j) is how many examples of true class i were predicted j.

  Args:
    labels, predicted: [N] int class ids in 0..K-1.
    num_classes: K.
  """
  labels, predicted = np.asarray(labels).reshape(-1), np.asarray(predicted).reshape(-1)
  if labels.shape != predicted.shape:
    raise ValueError(f"confusion_matrix: {labels.size} labels but {predicted.size} predictions")
  for name, ids in (("labels", labels), ("predictions", predicted)):
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
      raise ValueError(f"confusion_matrix: {name} must lie in [0, {num_classes})")
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, predicted), 1)
  return matrix


def expected_calibration_error(probs, labels, *, num_bins: int = 15) -> float:
  """Expected calibration error of a classifier's top-label confidence (Guo et al. 2017).

  Examples are binned by confidence max_y p(y | x) into ``num_bins`` equal-width bins of (0, 1];
  ECE = sum over bins of (bin size / N) * |accuracy in bin - mean confidence in bin|. 0 is perfect
  calibration.

  Args:
    probs: [N, K] class probabilities (rows sum to 1).
    labels: [N] int true classes.
    num_bins: number of bins (>= 1).

  Returns:
    ECE in [0, 1].
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels).reshape(-1)
  if probs.ndim != 2 or probs.shape[0] != labels.size or labels.size == 0 or num_bins < 1:
    raise ValueError(
      f"expected_calibration_error needs probs [N, K] and labels [N] with N >= 1 and "
      f"num_bins >= 1, got {probs.shape}, {labels.shape}, num_bins={num_bins}"
    )
  confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
  correct = (predicted == labels).astype(np.float64)
  bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
  ece = 0.0
  for b in np.unique(bins):
    in_bin = bins == b
    ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
  return float(ece)
