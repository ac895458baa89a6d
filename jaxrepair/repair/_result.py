"""What a repair returns: the repaired model and the record of how it was obtained."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxrepair import models


def locality(model, result) -> dict:
    """How local a repair is: the neurons it was given to change (``result.selected``: their incoming
    and outgoing weights, or their outputs' factors; all units for a method that selects none and
    trains every weight) out of the hidden units of ``model``
    (its post-activation sites). ``{"units_changed", "hidden_units", "share", "local"}``, where
    ``local`` is False once more than half the hidden units are in play."""
    info = models.sites(model)
    hidden = sum(int(np.prod(info[s].shape)) for s in models.hidden_sites(model))
    changed = len(result.selected) if result.selected else hidden  # no selection: every weight trains
    share = changed / hidden if hidden else 0.0
    return {"units_changed": changed, "hidden_units": hidden, "share": share, "local": share <= 0.5}


@dataclasses.dataclass
class RepairResult:
    """A repaired model and the record of how it was obtained."""

    task: str
    method: str
    model: models.Network
    selected: list  # [Neuron(site, unit, score)]
    solution: dict  # readable solution pytree (factors or deltas per site); {} for baselines
    before: dict  # test-split metrics of the input model
    after: dict  # test-split metrics of the repaired model
    search: dict  # select-split fitness, generations, evaluations, history
    timings: dict
    config: dict
    localization: object = None
    certificate: dict | None = None  # certified repair: {"proven", "verdict", "rounds", "certificate_boxes"}

    def summary(self) -> dict:
        """The headline figures (test split)."""
        b, a = self.before, self.after
        out = {"violation_before": b["violation"], "violation_after": a["violation"],
               "accuracy_before": b["accuracy"], "accuracy_after": a["accuracy"],
               "accuracy_drop_points": 100 * (b["accuracy"] - a["accuracy"]),
               "violation_reduction": (1 - a["violation"] / b["violation"]) if b["violation"] > 0 else None}
        if "drawdown" in a:
            out["drawdown"] = a["drawdown"]
        out["degenerate"] = a.get("degenerate")  # None, or why the repaired model is no real classifier
        out["degenerate_before"] = b.get("degenerate")
        return out

    def to_json(self) -> dict:
        hist = {k: np.asarray(v).tolist() for k, v in self.search.get("history", {}).items()}
        return {
            "task": self.task, "method": self.method, "config": self.config,
            "selected": [{"site": n.site, "unit": n.unit, "score": n.score} for n in self.selected],
            "solution": jax.tree.map(lambda v: np.asarray(v).tolist(), self.solution),
            "before_test": self.before, "after_test": self.after, "summary": self.summary(),
            "search": {**{k: v for k, v in self.search.items() if k != "history"}, "history": hist},
            "timings_s": self.timings,
            **({"certificate": self.certificate} if self.certificate is not None else {}),
        }

    def table(self) -> str:
        from jaxrepair.records import markdown_table

        rows = [["violation (test)", self.before["violation"], self.after["violation"]],
                ["accuracy (test)", self.before["accuracy"], self.after["accuracy"]]]
        if "drawdown" in self.after:
            rows.append(["drawdown (test)", 0.0, self.after["drawdown"]])
        rows.append(["time (s)", "", sum(self.timings.values())])
        if self.certificate is not None:
            rows.append(["proven safe (verifier)", "", "yes" if self.certificate["proven"] else
                         f"no ({self.certificate['verdict']} after {len(self.certificate['rounds'])} round(s))"])
        table = markdown_table(["metric", "before", f"after ({self.method})"], rows)
        for when, d in (("before", self.before), ("after", self.after)):
            if d.get("degenerate"):
                table += f"\n**Degenerate model {when} repair:** {d['degenerate']}; its violation figure is no success.\n"
        return table


def repaired_model(model, params, record: dict) -> models.Network:
    """``model`` with new ``params`` and the repair ``record`` in its metadata."""
    net = model.with_params(params)
    net.meta = {**model.meta, "repair": record}
    return net
