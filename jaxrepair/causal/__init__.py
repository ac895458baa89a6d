"""Causal analysis of networks: effect functions and neuron-level ACE localisation.

Depends on :mod:`jaxrepair.models` and :mod:`jaxrepair.interventions`.
"""

from jaxrepair.causal._ace import DEFAULT_SCORE, SCORES, Localization, Neuron, SiteACE, ace
from jaxrepair.causal._effects import CounterfactualPair, Fairness, TargetOutput

__all__ = [
    "DEFAULT_SCORE", "SCORES", "CounterfactualPair", "Fairness", "Localization", "Neuron", "SiteACE",
    "TargetOutput", "ace",
]
