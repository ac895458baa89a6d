"""The feature-level methods in the registry (:data:`jaxrepair.repair.METHODS`): counterfactual logit
pairing and counterfactual augmentation on attribute-flip pairs, and IRM fine-tuning with the
sensitive attribute's values as environments — for fairness tasks, whose property names the
attribute. Each chooses its checkpoint on the select split by the task objective under the preset's
accuracy budget, and reports on test like every other method.
"""

from __future__ import annotations

import time

from jaxrepair import properties
from jaxrepair.feature._counterfactual import counterfactual_training
from jaxrepair.feature._network import irm_finetune
from jaxrepair.repair import Method, RepairResult, metrics, preset_for, register

GARG = "Garg et al., Counterfactual Fairness in Text Classification through Robustness, AIES 2019 (logit pairing)"
KAUSHIK = "Kaushik et al., Learning the Difference that Makes a Difference, ICLR 2020 (counterfactual augmentation)"
IRM = "Arjovsky et al., Invariant Risk Minimization, 2019 (IRMv1)"


def _sensitive(task):
    prop = task.objective.prop
    if not isinstance(prop, properties.IndividualFairness):
        raise ValueError(f"task {task.name!r}: feature-level fairness methods need an individual-fairness property")
    return prop


def _counterfactual(mode: str):
    def run(model, task, *, seed, steps: int = 300, lam: float = 1.0, learning_rate: float = 1e-3, a=None,
            max_drop="preset"):
        prop = _sensitive(task)
        p = preset_for(task.kind)
        import numpy as np

        columns = [f"x{i}" for i in range(int(np.prod(model.input_shape)))]
        return counterfactual_training(model, task, attribute=columns[prop.column], values=prop.values, columns=columns,
                                       mode=mode, lam=lam, steps=steps, learning_rate=learning_rate,
                                       a=p.a_grad if a is None else a,
                                       max_drop=p.max_drop if max_drop == "preset" else max_drop, seed=seed)

    return run


def _irm(model, task, *, seed, penalty_weight: float = 100.0, steps: int = 300, learning_rate: float = 1e-3, a=None,
         max_drop="preset"):
    import numpy as np

    prop = _sensitive(task)
    p = preset_for(task.kind)
    a = p.a_grad if a is None else a
    md = p.max_drop if max_drop == "preset" else max_drop
    rep = task.data["repair"]["accuracy"]
    x, y = np.asarray(rep["x"]), np.asarray(rep["y"])
    envs = [(x[x[:, prop.column] == v], y[x[:, prop.column] == v]) for v in np.asarray(prop.values)]
    envs = [e for e in envs if len(e[1])]
    sel = task.data["select"]
    _, acc0 = metrics(task.objective, model, sel)

    def score(net):  # higher is better: minus the select objective, the budget as a penalty
        v, acc = metrics(task.objective, net, sel)
        over = md is not None and acc < acc0 - md - 1e-12
        return -((1 - a) * v + a * (1 - acc) + (10.0 if over else 0.0))

    t = time.perf_counter()
    net = irm_finetune(model, envs, penalty_weight=penalty_weight, steps=steps, learning_rate=learning_rate, seed=seed,
                       select=score)
    train_s = time.perf_counter() - t
    return RepairResult(task.name, "irm", net, [], {}, task.report(model), task.report(net),
                        {"select_fitness": -score(net)}, {"train": train_s},
                        {"penalty_weight": penalty_weight, "steps": steps, "learning_rate": learning_rate, "a": a,
                         "max_drop": md, "environments": [int(len(e[1])) for e in envs]})


for _m in (
    Method("cf-clp", _counterfactual("clp"), ("fairness",), GARG,
           "fine-tune with counterfactual logit pairing on attribute-flip pairs", options=("steps", "lam", "learning_rate",
                                                                                          "a", "max_drop")),
    Method("cf-augment", _counterfactual("augment"), ("fairness",), KAUSHIK,
           "fine-tune on the rows and their attribute-flip counterfactuals", options=("steps", "learning_rate", "a",
                                                                                      "max_drop")),
    Method("irm", _irm, ("fairness",), IRM, "IRMv1 fine-tuning, one environment per value of the sensitive attribute",
           options=("penalty_weight", "steps", "learning_rate", "a", "max_drop")),
):
    register(_m, replace=True)
del _m
