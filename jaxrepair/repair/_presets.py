"""Presets: the one set of repair defaults, per task kind, plus ``care`` (CARE's reference settings).

``jr.repair(model, task)`` with no options uses the preset of ``task.kind`` — the same values
``jaxrepair repair`` uses — and records the preset's name and every value it used.

jaxrepair's own presets differ from CARE on purpose (measured on the zoo, see the README): they
intervene on post-activation sites, rank by interventional change, start the swarm at random with
the unrepaired model in it, search with evosax's PSO and keep a select split apart. ``care``
follows CARE's code (longph1989/Socrates ``source/solver/causal_impl.py``): pre-activation (Linear
output) sites, the class-0 raw output as the fairness effect, ranking by the mean ACE over 16
values, 13 factors in [0, 2] (CARE's ``1 + w``, ``w ∈ [−1, 1]``), pyswarms' global-best PSO with 20
particles all starting at the unrepaired model, w = 0.8, c1 = c2 = 0.41, at most 100 iterations,
``ftol`` 1e-3 over 10 iterations, and fitness ``0.7·violation + 0.3·(1 − accuracy)``.
"""

from __future__ import annotations

import dataclasses

from jaxrepair.records import did_you_mean


@dataclasses.dataclass(frozen=True)
class Preset:
    """Every choice a repair makes; ``None`` fields fall back to the library's defaults."""

    name: str
    k: int
    a: float
    bounds: object  # factor (low, high) or delta bound × layer std
    max_drop: float | None = None
    space: str = "factor"
    strategy: str = "pso"
    score: str = "interventional_change"
    site_kind: str = "post-activation"
    init: str = "random"
    effect: str = "task"  # "task": the task's localisation effect; "care": CARE's (class 0, raw output)
    k_grad: tuple = (10,)  # neuron counts tried by localized_finetune (best on the select split)
    a_grad: float = 0.2
    localizer: str = "ace"  # "ace" | "interchange" (counterfactual tracing)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# CARE repaired 3 neurons for fairness, ~1% of a layer for backdoors and ~half a layer for ACAS Xu;
# on our zoo 3 factors cut census unfairness by only ~36%, so fairness uses 10. ``max_drop`` is kept
# below the acceptance limits (1 point for fairness, 2 for backdoors) to leave room for select/test noise.
PRESETS = {
    "fairness": Preset("fairness", k=10, a=0.5, bounds=(-1.0, 3.0), max_drop=0.0075, k_grad=(10, 30, 50, 100)),
    "backdoor": Preset("backdoor", k=5, a=0.5, bounds=(0.0, 2.0), max_drop=0.015, k_grad=(30,)),
    "safety": Preset("safety", k=25, a=0.5, bounds=(-1.0, 3.0), max_drop=0.03, k_grad=(50,)),
    # A spurious shortcut: factors of the conv channels that carry it; the accuracy is measured on
    # decorrelated images, where removing the shortcut raises it.
    "spurious": Preset("spurious", k=10, a=0.5, bounds=(0.0, 2.0), max_drop=0.01, k_grad=(32,)),
    "custom": Preset("custom", k=3, a=0.2, bounds=(0.0, 2.0)),
    "care": Preset("care", k=13, a=0.3, bounds=(0.0, 2.0), strategy="care", score="care_mean",
                   site_kind="pre-activation", init="identity", effect="care"),
    # CCBR as the causal-repair literature names it: units localised by counterfactual tracing
    # (interchange interventions on counterfactual pairs), then NSGA-III over their factors,
    # minimising violation and accuracy loss under the accuracy budget. CCBR's paper text and code
    # were not found (the README's "The ccbr preset" lists what is inferred): every setting is jaxrepair's.
    "ccbr": Preset("ccbr", k=10, a=0.5, bounds=(0.0, 2.0), max_drop=0.01, strategy="nsga3", localizer="interchange"),
}


def preset_for(kind: str, name: str | None = None) -> Preset:
    """The preset called ``name``, or the one for a task of ``kind``."""
    key = name or kind
    if key not in PRESETS:
        raise ValueError(f"unknown preset {key!r}{did_you_mean(key, PRESETS)} (choose one of {sorted(PRESETS)})")
    return PRESETS[key]
