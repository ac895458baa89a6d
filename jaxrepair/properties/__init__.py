"""Properties of a model: accuracy, individual and group fairness, backdoor, ACAS Xu safety.

Each is a pure function ``(apply_fn, params, batch) -> per-example violation`` with a ``rate``.
Depends on :mod:`jaxrepair.models` only through ``apply_fn``.
"""

from jaxrepair.properties._acasxu import DESCRIPTIONS as ACASXU_PROPERTIES, Safety, safety_report
from jaxrepair.properties._vnnlib import Vnnlib, clause_margin, from_vnnlib
from jaxrepair.properties._group import (
    GroupRates,
    demographic_parity_difference,
    equalized_odds_difference,
    group_metrics,
    group_metrics_from_predictions,
    group_rates,
)
from jaxrepair.properties._core import (
    AttackSuccess,
    CounterfactualInvariance,
    failing_set,
    Combined,
    IndividualFairness,
    Misclassification,
    Property,
    accuracy,
    combine,
    predict,
    violations,
    Static,
    sample_domain,
    sampled_rate,
    split,
    wilson_interval,
)

__all__ = [
    "AttackSuccess", "CounterfactualInvariance", "failing_set",
    "ACASXU_PROPERTIES", "Safety", "safety_report", "Vnnlib", "clause_margin", "from_vnnlib",
    "Combined", "IndividualFairness", "Misclassification", "Property", "accuracy", "combine",
    "Static", "demographic_parity_difference", "predict", "violations", "equalized_odds_difference", "sample_domain", "sampled_rate", "split",
    "wilson_interval", "GroupRates", "group_metrics", "group_metrics_from_predictions", "group_rates",
]
