"""Evaluation: a judge classifier in place of Inception weights, and task evaluators.

    judge, judge_test_accuracy = jebm.eval.load_or_train_judge("mnist")
    report = jebm.eval.sample_quality(samples, labels, test_images, judge)  # FID, KID, IS, ...
    report |= jebm.eval.classification_accuracy(energy_fn, test_images, test_labels, 10)
    report |= jebm.eval.ood_auroc(energy_fn, test_images, rng_key=key, num_classes=10)

Every task returns a JSON-serialisable dict; the metrics themselves live in `jebm.metrics`.
"""

from jebm.eval.batching import map_batches
from jebm.eval.judge import CACHE_SUBDIR, FeatureFn, Judge, JudgeConfig, JudgeNet
from jebm.eval.judge import apply_feature_fn, default_judge_config, init_judge, judge_accuracy
from jebm.eval.judge import judge_cache_path, judge_config, judge_features, judge_logits
from jebm.eval.judge import load_feature_fn, load_judge, load_or_train_judge, save_judge
from jebm.eval.judge import train_judge
from jebm.eval.tasks import class_energies, classification_accuracy, energy_histogram_data
from jebm.eval.tasks import min_energy, ood_auroc, ood_sets, sample_quality
