"""Evaluation: one module per task, a judge classifier in place of Inception weights.

    judge, judge_test_accuracy = jebm.eval.load_or_train_judge("mnist")
    report = jebm.eval.sample_quality(samples, labels, test_images, judge)   # FID, KID, IS, ...
    report = jebm.eval.classification_report(energy_fn, test_images, test_labels, 10)
    report = jebm.eval.ood_benchmark(energy_fn, test_images, {"uniform": noise}, num_classes=10)
    report = jebm.eval.robustness_report(key, energy_fn, test_images, test_labels, 10, sampler)
    corrupted, mask = jebm.eval.corrupt(key, images, "inpaint_bottom")  # then restore_images

Every task returns a JSON-serialisable dict; the metrics themselves live in `jebm.metrics`.
``TASKS`` maps the task names of ``experiments/evaluate.py`` to their ``evaluate(ctx)`` functions.
"""

from jebm.eval.batching import map_batches, map_host_chunks
from jebm.eval.classify import classification_report
from jebm.eval.context import EvalContext
from jebm.eval.energies import chunk_size, class_energies, energy_table_fn, min_energy
from jebm.eval.energies import min_energy_fn
from jebm.eval.features import FeatureFn, apply_feature_fn, load_feature_fn
from jebm.eval.histograms import energy_histogram_data
from jebm.eval.judge import Judge, JudgeConfig, JudgeNet, default_judge_config, init_judge
from jebm.eval.judge import judge_accuracy, judge_config, judge_features, judge_logits
from jebm.eval.judge_cache import CACHE_SUBDIR, judge_cache_path, load_judge
from jebm.eval.judge_cache import load_or_train_judge, save_judge
from jebm.eval.judge_training import train_judge
from jebm.eval.likelihood import LikelihoodConfig
from jebm.eval.ood import SYNTHETIC_SETS, auroc_row, check_ood_spec, load_ood_set, ood_benchmark
from jebm.eval.ood import ood_scores_fn, synthetic_ood_set
from jebm.eval.generation import sample_quality
from jebm.eval.restore import CORRUPTIONS, RestoreConfig, corrupt, restore_images
from jebm.eval.restore import restore_unknown_label
from jebm.eval.robustness import RobustnessConfig, robustness_report
from jebm.eval.steps import StepsConfig, distinct_neighbour_fraction, within_class_distance
from jebm.eval.tasks import ON_REQUEST, TASKS, check_tasks, default_tasks
