"""What the theory half and the language-model half share; imports jax and numpy only.

* :mod:`~w2s_jax.core.objectives`: the refinement objective as pure functions (squared error to a
  Gaussian posterior mean; cross-entropy / KL to a categorical posterior).
* :mod:`~w2s_jax.core.posterior`: the posterior over latent concepts and its readouts.
* :mod:`~w2s_jax.core.label_sources`: gold, weak and refined labels as small strategies.
* :mod:`~w2s_jax.core.metrics`: excess risk, accuracy, PGR with a confidence interval.
* :mod:`~w2s_jax.core.binary_objectives`: the binary weak-to-strong losses (soft cross-entropy, the
  auxiliary confidence loss with its threshold and warm-up, product, entropy-regularised, window).
* :mod:`~w2s_jax.core.classification_metrics`: ROC AUC, calibration error, agreement, and PGR on any of
  them with intervals over items and over seeds.
* :mod:`~w2s_jax.core.probes`: logistic and kNN probes on cached features; and
  :mod:`~w2s_jax.core.label_repair`: relabelling and filtering weak labels with out-of-fold probes.
"""

from w2s_jax.core.binary_objectives import (
    aux_confidence_loss,
    entropy_regularised_loss,
    product_loss,
    rate_threshold,
    soft_cross_entropy,
    warmup_weight,
    window_loss,
)
from w2s_jax.core.classification_metrics import (
    CLASSIFICATION_METRICS,
    Accuracy,
    CalibrationError,
    RocAuc,
    agreement,
    expected_calibration_error,
    item_interval,
    pgr_over_items,
    pgr_over_seeds,
    roc_auc,
    seed_interval,
)
from w2s_jax.core.label_repair import filter_by_probe, fold_ids, out_of_fold, relabel, topo_filter
from w2s_jax.core.label_sources import GoldLabels, RefinedLabels, WeakLabels, residual_covariance
from w2s_jax.core.metrics import PGREstimate, accuracy, excess_risk, mean_and_se, pgr
from w2s_jax.core.objectives import cross_entropy_to_probs, kl_to_probs, squared_error_to_mean
from w2s_jax.core.posterior import (
    READOUTS,
    PosteriorMAP,
    PosteriorMean,
    PosteriorSample,
    Readout,
    concept_log_posterior,
)
from w2s_jax.core.probes import FittedKNN, FittedLogistic, KNNProbe, LogisticProbe

__all__ = [
    "aux_confidence_loss",
    "entropy_regularised_loss",
    "product_loss",
    "rate_threshold",
    "soft_cross_entropy",
    "warmup_weight",
    "window_loss",
    "CLASSIFICATION_METRICS",
    "Accuracy",
    "CalibrationError",
    "RocAuc",
    "agreement",
    "expected_calibration_error",
    "item_interval",
    "pgr_over_items",
    "pgr_over_seeds",
    "roc_auc",
    "seed_interval",
    "LogisticProbe",
    "KNNProbe",
    "FittedLogistic",
    "FittedKNN",
    "fold_ids",
    "out_of_fold",
    "relabel",
    "filter_by_probe",
    "topo_filter",
    "GoldLabels",
    "WeakLabels",
    "RefinedLabels",
    "residual_covariance",
    "PGREstimate",
    "accuracy",
    "excess_risk",
    "mean_and_se",
    "pgr",
    "cross_entropy_to_probs",
    "kl_to_probs",
    "squared_error_to_mean",
    "READOUTS",
    "PosteriorMAP",
    "PosteriorMean",
    "PosteriorSample",
    "Readout",
    "concept_log_posterior",
]
