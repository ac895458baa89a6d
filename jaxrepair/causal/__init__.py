"""Causal analysis of networks: effect functions, neuron-level ACE localisation, interchange
interventions, causal tracing over (layer, position), input-feature ACE and structural causal models over tabular features.

Depends on :mod:`jaxrepair.models` and :mod:`jaxrepair.interventions`.
"""

from jaxrepair.causal._adaptive import ADAPTIVE_SCORES, BOUNDS, AdaptiveLocalization, AdaptiveSite, adaptive_ace
from jaxrepair.causal._ace import DEFAULT_SCORE, SCORES, Localization, Localizer, Neuron, SiteACE, ace
from jaxrepair.causal._effects import CounterfactualPair, Effect, Fairness, TargetOutput, describe
from jaxrepair.causal._input_ace import FeatureACE, InputACE, feature_ace, input_ace, plot_input_ace
from jaxrepair.causal._interchange import Interchange, interchange
from jaxrepair.causal._screen import HESSIANS, Screening, piecewise_linear_after, screen, taylor_ace
from jaxrepair.causal._tracing import CausalTrace, causal_trace
from jaxrepair.causal._scm import SCM, counterfactual_fairness, default_dag, edit_dag, fit_default

__all__ = [
    "ADAPTIVE_SCORES", "BOUNDS", "CausalTrace", "causal_trace", "AdaptiveLocalization", "AdaptiveSite", "adaptive_ace",
    "DEFAULT_SCORE", "SCORES", "SCM", "CounterfactualPair", "Effect", "Fairness", "FeatureACE", "InputACE", "Interchange", "Localization", "Localizer",
    "Neuron", "SiteACE", "TargetOutput", "ace", "counterfactual_fairness", "default_dag", "describe", "edit_dag", "fit_default", "input_ace", "interchange",
    "plot_input_ace", "HESSIANS", "Screening", "piecewise_linear_after", "screen", "taylor_ace",
]
