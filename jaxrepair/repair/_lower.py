"""A repair task moved past the layers it does not change.

:func:`lower` cuts the model at a site (``jr.models.head``) and maps every batch of the task through
the layers before it once: the inputs, the triggered inputs of a backdoor property (``x_trig``) and
the counterfactual inputs of the localisation batch (``x_cf``). Every repair method then runs on the
head — searches, ACE and fine-tuning cost a pass through the head only — and
``jr.models.attach(model, result.model)`` gives the repaired whole network. The lowered task's
test report is computed on the lowered test split; it equals the whole network's (the same
arithmetic), which :func:`lower`'s caller can check with the original task's report.
"""

from __future__ import annotations

import dataclasses

from jaxrepair import models, properties
from jaxrepair.repair._task import Task, metrics

# Properties whose violation needs nothing of an input but the network's outputs on it, or on a
# fixed transformation of it that can be computed before the cut.
_LOWERABLE = (properties.AttackSuccess, properties.Misclassification, properties.CounterfactualInvariance)


def lower(model, task: Task, site: str, *, batch_size: int = 1024) -> tuple[models.Network, Task]:
    """``(head, task on the head)``: the network after ``site`` and the task with every batch
    replaced by its values at ``site``.

    Raises ``ValueError`` for properties that change the input itself in ways that depend on the
    weights' side of the cut (individual fairness flips an input column; safety samples input
    boxes): those tasks are repaired on the whole network.
    """
    prop = task.objective.prop
    if not isinstance(prop, _LOWERABLE):
        raise ValueError(f"task {task.name!r}: its property {type(prop).__name__} reads the inputs themselves, so "
                         f"it cannot be moved past {site!r}; repair the whole network")
    part = models.head(model, site)  # checks the site first
    task.check_model(model)

    def values(x):
        return models.site_values(model, site, x, batch_size=batch_size)

    def low(batch: dict, with_trigger: bool) -> dict:
        out = dict(batch)
        out["x"] = values(batch["x"])
        if "x_cf" in batch:
            out["x_cf"] = values(batch["x_cf"])
        if with_trigger and isinstance(prop, properties.AttackSuccess):
            out["x_trig"] = values(prop.triggered(batch))
        return out

    data = {split: {"property": low(d["property"], True), "accuracy": low(d["accuracy"], False)}
            for split, d in task.data.items()}
    loc = low(task.localize_batch, False)

    def report(m):
        v, acc = metrics(task.objective, m, data["test"])
        return {"violation": v, "accuracy": acc}

    lowered = dataclasses.replace(task, data=data, localize_batch=loc, report_fn=report,
                                  info={**task.info, "lowered_at": site})
    lowered.check_model(part)
    return part, lowered
