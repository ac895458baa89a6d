"""Causality-driven repair: ACE-localised neurons, evosax search, baselines, Pareto fronts.

>>> import jaxrepair as jr
>>> bench = jr.zoo.load("census-sex")                      # doctest: +SKIP
>>> task = jr.repair.from_zoo(bench)                        # doctest: +SKIP
>>> result = jr.repair.repair(bench.model, task, k=3)       # doctest: +SKIP
>>> print(result.table())                                   # doctest: +SKIP
"""

from jaxrepair.repair._repair import (
    DEFAULTS,
    RepairResult,
    candidate_sites,
    finetune,
    interchange_pairs,
    localize,
    localize_interchange,
    localized_finetune,
    make_space,
    pareto,
    prune,
    random_selection,
    repair,
    weight_mask,
)
from jaxrepair.repair._report import plot_history, plot_pareto, write_pareto, write_result
from jaxrepair.repair._search import PRESETS, STRATEGIES, Strategy, get_strategy, non_dominated
from jaxrepair.repair._space import DeltaSpace, FactorSpace, Neurons, group
from jaxrepair.repair._task import Objective, Task, custom_task, from_zoo

__all__ = [
    "DEFAULTS", "DeltaSpace", "FactorSpace", "Neurons", "Objective", "PRESETS", "RepairResult", "STRATEGIES", "Strategy",
    "Task", "candidate_sites", "custom_task", "finetune", "from_zoo", "get_strategy", "group", "interchange_pairs", "localize", "localize_interchange", "localized_finetune",
    "make_space", "non_dominated", "pareto", "plot_history", "plot_pareto", "prune", "random_selection", "repair",
    "weight_mask", "write_pareto", "write_result",
]


import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    """Lets ``jr.repair(model, task, ...)`` call :func:`repair` while ``jr.repair.*`` stays a module."""

    def __call__(self, *args, **kwargs):
        return repair(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
