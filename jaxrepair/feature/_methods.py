"""The feature-level methods in the registry (:data:`jaxrepair.repair.METHODS`): counterfactual logit
pairing, counterfactual augmentation and IRM fine-tuning, for the task kinds whose task says what
the spurious feature is:

* fairness — the counterfactual of a row flips the sensitive attribute (the property names it); IRM's
  environments are the attribute's values;
* spurious — the counterfactual of an image repaints its border in a random colour (the task names
  the border); IRM's environments are the images whose border colour agrees with the label and
  those whose colour does not (the colour read back from the pixels).

Each trains on the task's repair rows, chooses its checkpoint on the select split by the task
objective under the preset's accuracy budget, and reports on test like every other method.
``experiments/spurious.py`` trains its feature-level methods on the whole training split instead
(and picks λ from a grid), so its figures are not these methods' on a 1,000-image repair split.
"""

from __future__ import annotations

import time

import numpy as np

from jaxrepair import properties
from jaxrepair.feature._counterfactual import counterfactual_training
from jaxrepair.feature._network import counterfactual_finetune, irm_finetune
from jaxrepair.repair import FROM_PRESET, Method, RepairResult, metrics, preset_for, register

GARG = "Garg et al., Counterfactual Fairness in Text Classification through Robustness, AIES 2019 (logit pairing)"
KAUSHIK = "Kaushik et al., Learning the Difference that Makes a Difference, ICLR 2020 (counterfactual augmentation)"
IRM = "Arjovsky et al., Invariant Risk Minimization, 2019 (IRMv1)"
_KINDS = ("fairness", "spurious")


def _sensitive(task):
    prop = task.objective.prop
    if not isinstance(prop, properties.IndividualFairness):
        raise ValueError(f"task {task.name!r}: feature-level fairness methods need an individual-fairness property")
    return prop


#: The fine-tuning rate by task kind when none is given: tabular fairness models 1e-3; the spurious
#: ResNet 1e-4 (experiments/spurious.py's, the library's default for image networks).
_RATE = {"fairness": 1e-3, "spurious": 1e-4}


def _settings(task, a, max_drop, learning_rate) -> tuple:
    p = preset_for(task.kind)
    return (p.a_grad if a is None else a, p.max_drop if max_drop == FROM_PRESET else max_drop,
            _RATE[task.kind] if learning_rate is None else learning_rate)


def _select(task, model, a, max_drop):
    """The checkpoint score on the select split (higher is better): minus the task objective
    ``(1−a)·violation + a·(1−accuracy)``, with the accuracy budget as a penalty."""
    sel = task.data["select"]
    _, acc0 = metrics(task.objective, model, sel)

    def score(net):
        v, acc = metrics(task.objective, net, sel)
        over = max_drop is not None and acc < acc0 - max_drop - 1e-12
        return -((1 - a) * v + a * (1 - acc) + (10.0 if over else 0.0))

    return score


def _result(task, name, model, net, score, train_s, config) -> RepairResult:
    return RepairResult(task.name, name, net, [], {}, task.report(model), task.report(net),
                        {"select_fitness": -score(net)}, {"train": train_s}, config)


def _repair_images(task):
    """The spurious task's repair images as trained (their own border colours), labels and border."""
    from jaxrepair.data import ColourBorder

    rep = task.data["repair"]["property"]
    return np.asarray(rep["x"]), np.asarray(rep["y"]), ColourBorder(task.info["border"])


def _counterfactual(mode: str):
    def run(model, task, *, seed, steps: int = 300, lam: float = 1.0, learning_rate=None, a=None, max_drop=FROM_PRESET,
            eval_every=None):
        a, md, lr = _settings(task, a, max_drop, learning_rate)
        if task.kind == "spurious":  # the border repainted in a random colour: the counterfactual image
            x, y, border = _repair_images(task)
            score = _select(task, model, a, md)
            t = time.perf_counter()
            net = counterfactual_finetune(model, x, y, border.recolour, mode=mode, lam=lam, steps=steps,
                                          learning_rate=lr, seed=seed, select=score,
                                          eval_every=min(eval_every or 50, steps))
            return _result(task, f"cf-{mode}", model, net, score, time.perf_counter() - t,
                           {"mode": mode, "lam": lam, "steps": steps, "learning_rate": lr, "a": a, "max_drop": md})
        prop = _sensitive(task)
        columns = [f"x{i}" for i in range(int(np.prod(model.input_shape)))]
        return counterfactual_training(model, task, attribute=columns[prop.column], values=prop.values, columns=columns,
                                       mode=mode, lam=lam, steps=steps, learning_rate=lr, a=a, max_drop=md, seed=seed,
                                       **({"eval_every": eval_every} if eval_every else {}))

    return run


def _environments(task) -> list:
    """IRM's environments: fairness, one per value of the sensitive attribute (repair rows); spurious,
    the repair images whose border colour agrees with the label and those whose colour does not."""
    if task.kind == "spurious":
        x, y, border = _repair_images(task)
        agree = border.colour(x) == y
        envs = [(x[agree], y[agree]), (x[~agree], y[~agree])]
    else:
        prop = _sensitive(task)
        rep = task.data["repair"]["accuracy"]
        x, y = np.asarray(rep["x"]), np.asarray(rep["y"])
        envs = [(x[x[:, prop.column] == v], y[x[:, prop.column] == v]) for v in np.asarray(prop.values)]
    return [e for e in envs if len(e[1])]


def _irm(model, task, *, seed, penalty_weight: float = 100.0, steps: int = 300, learning_rate=None, a=None,
         max_drop=FROM_PRESET, eval_every=None):
    a, md, lr = _settings(task, a, max_drop, learning_rate)
    envs = _environments(task)
    score = _select(task, model, a, md)
    t = time.perf_counter()
    net = irm_finetune(model, envs, penalty_weight=penalty_weight, steps=steps, learning_rate=lr, seed=seed,
                       select=score, eval_every=min(eval_every or 50, steps))
    return _result(task, "irm", model, net, score, time.perf_counter() - t,
                   {"penalty_weight": penalty_weight, "steps": steps, "learning_rate": lr, "a": a, "max_drop": md,
                    "environments": [int(len(e[1])) for e in envs]})


for _m in (
    Method("cf-clp", _counterfactual("clp"), _KINDS, GARG,
           "fine-tune with counterfactual logit pairing (attribute-flip pairs; spurious: the border recoloured)",
           options=("steps", "lam", "learning_rate", "a", "max_drop", "eval_every"), level="feature"),
    Method("cf-augment", _counterfactual("augment"), _KINDS, KAUSHIK,
           "fine-tune on the rows and their counterfactuals (attribute flips; spurious: recoloured borders)",
           options=("steps", "learning_rate", "a", "max_drop", "eval_every"), level="feature"),
    Method("irm", _irm, _KINDS, IRM,
           "IRMv1 fine-tuning: one environment per sensitive value (spurious: colour agrees with the label or not)",
           options=("penalty_weight", "steps", "learning_rate", "a", "max_drop", "eval_every"), level="feature"),
):
    register(_m, replace=True)
del _m
