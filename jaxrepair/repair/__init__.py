"""Causality-driven repair: a prepared :class:`Problem` (one compiled search for every selection,
seed, ``a`` and budget), ACE-localised neurons, evosax search, NSGA-II/III (``_nsga.py``), baselines,
Pareto fronts and their hypervolume (``_front.py``), presets.

>>> import jaxrepair as jr
>>> bench = jr.zoo.load("census-sex")                      # doctest: +SKIP
>>> task = jr.repair.from_zoo(bench)                        # doctest: +SKIP
>>> result = jr.repair(bench.model, task)                   # the task kind's preset  # doctest: +SKIP
>>> print(result.table())                                   # doctest: +SKIP

Depends on :mod:`jaxrepair.models`, :mod:`jaxrepair.causal` and :mod:`jaxrepair.properties`.
"""

from jaxrepair.repair._acasxu import SETTINGS as ACASXU_SETTINGS
from jaxrepair.repair._acasxu import SUITE as ACASXU_SUITE
from jaxrepair.repair._acasxu import AcasxuSets, acasxu_task
from jaxrepair.repair._acasxu import repair_task as repair_acasxu
from jaxrepair.repair._acasxu import task_metrics as acasxu_metrics
from jaxrepair.repair._acasxu import task_name as acasxu_task_name
from jaxrepair.repair._bound_training import bound_finetune
from jaxrepair.repair._certified import certified_repair
from jaxrepair.repair._lower import lower
from jaxrepair.repair._presets import PRESETS, Preset, preset_for
from jaxrepair.repair._problem import Problem, candidate_sites, prepare, problem_data
from jaxrepair.repair._methods import KINDS, METHODS, Method, get_method, methods_for, register
from jaxrepair.repair._plan import (
    FROM_PRESET,
    Plan,
    interchange_pairs,
    localization_effect,
    localize,
    localize_interchange,
    plan,
    random_selection,
)
from jaxrepair.repair._repair import choose, finetune, localized_finetune, optimise_with_selection, pareto, prune, repair, weight_mask
from jaxrepair.repair._result import RepairResult, locality, repaired_model
from jaxrepair.repair._report import plot_history, plot_pareto, write_pareto, write_result
from jaxrepair.repair._table import ROWS as TABLE_ROWS
from jaxrepair.repair._table import check_table_fits, evaluate_table, rows_note, table_sensitive, table_task
from jaxrepair.repair._search import OBJECTIVES, STRATEGIES, Strategy, budget, get_strategy, non_dominated
from jaxrepair.repair._front import hypervolume, non_dominated_mask
from jaxrepair.repair._front import summarise as summarise_front
from jaxrepair.repair._nsga import NSGA, reference_directions
from jaxrepair.repair._nsga import minimize as nsga
from jaxrepair.repair._space import DeltaSpace, FactorSpace, Neurons, Slots, Space, group
from jaxrepair.repair._task import TASK_BUILDERS, Objective, Task, custom_task, degeneracy, degeneracy_of_predictions, from_zoo, metrics

__all__ = [
    "ACASXU_SETTINGS", "ACASXU_SUITE", "AcasxuSets", "acasxu_metrics", "acasxu_task", "acasxu_task_name", "repair_acasxu",
    "DeltaSpace", "FROM_PRESET", "FactorSpace", "KINDS", "METHODS", "Method", "get_method", "methods_for", "register", "Neurons", "Objective", "PRESETS", "Plan", "Preset", "Problem", "RepairResult",
    "STRATEGIES", "Slots", "Space", "Strategy", "TASK_BUILDERS", "Task", "bound_finetune", "budget", "candidate_sites", "certified_repair", "choose", "custom_task", "degeneracy", "degeneracy_of_predictions", "finetune", "from_zoo",
    "get_strategy", "group", "interchange_pairs", "lower", "localization_effect", "localize", "localize_interchange",
    "localized_finetune", "metrics", "non_dominated", "optimise_with_selection", "pareto", "plan", "plot_history", "plot_pareto",
    "prepare", "preset_for", "problem_data", "prune", "random_selection", "repair", "repaired_model", "weight_mask", "write_pareto",
    "write_result", "OBJECTIVES", "NSGA", "hypervolume", "non_dominated_mask", "nsga", "reference_directions", "summarise_front",
    "locality", "TABLE_ROWS", "check_table_fits", "evaluate_table", "rows_note", "table_sensitive", "table_task",
]


import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    """Lets ``jr.repair(model, task, ...)`` call :func:`repair` while ``jr.repair.*`` stays a module."""

    def __call__(self, *args, **kwargs):
        return repair(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
