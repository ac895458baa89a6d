"""The zoo: benchmark entries (data + model + property + training recipe), built offline from a seed.

Depends on models, data, properties and optax.
"""

from jaxrepair.zoo._registry import (
    ENTRIES, KINDS, BackdoorEntry, Benchmark, FairnessEntry, Kind, SafetyEntry, SpuriousEntry, build, cache_dir, entry, evaluate, evaluate_fairness, evaluate_spurious, load,
    needs_data_dir,
)
from jaxrepair.zoo._train import cross_entropy, train_classifier

__all__ = ["ENTRIES", "KINDS", "Kind", "BackdoorEntry", "Benchmark", "SafetyEntry", "SpuriousEntry", "evaluate", "FairnessEntry", "build", "cache_dir", "cross_entropy", "entry",
           "evaluate_fairness", "evaluate_spurious", "load", "needs_data_dir", "train_classifier"]
