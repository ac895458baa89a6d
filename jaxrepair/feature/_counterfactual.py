"""Counterfactual data augmentation and counterfactual logit pairing (CLP).

Both fine-tune a model with optax on pairs ``(x, x_cf)``, ``x_cf`` the SCM counterfactual "had the
sensitive attribute been different" (or the plain attribute flip when no SCM is given):

* ``augment`` — cross-entropy on ``x`` and on ``x_cf`` with the label of ``x``;
* ``clp`` — cross-entropy on ``x`` plus ``λ·‖logits(x) − logits(x_cf)‖²`` (Garg et al. 2019).

The best checkpoint is chosen on the task's select split by the task objective (with the same
accuracy budget as repair), and the before/after figures come from the held-out test split, with
the counterfactual-fairness violation next to the task's own metric. The result is a
:class:`~jaxrepair.repair.RepairResult`, so it is written and compared like every neuron-level repair.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepair import models
from jaxrepair.causal import SCM, counterfactual_fairness
from jaxrepair.repair import RepairResult, Task, budget, optimise_with_selection, problem_data, repaired_model


def counterfactual_pairs(x, attribute_col: int, values, *, scm: SCM | None = None, attribute: str | None = None, key=None):
    """For each row, the counterfactual with the attribute set to another of ``values`` (drawn at
    random among the others; the other one for binary attributes)."""
    x = np.asarray(x, np.float32)
    values = np.asarray(values, np.float32)
    key = jax.random.key(0) if key is None else key
    cur = x[:, attribute_col]
    choice = np.asarray(jax.random.randint(key, (len(x),), 0, max(len(values) - 1, 1)))
    new = np.empty(len(x), np.float32)
    for i, (c, ch) in enumerate(zip(cur, choice)):
        others = values[values != c]
        new[i] = others[ch % len(others)] if len(others) else c
    if scm is None:
        out = x.copy()
        out[:, attribute_col] = new
        return out
    return np.asarray(scm.counterfactual(jnp.asarray(x), {attribute: jnp.asarray(new)}), np.float32)


@dataclasses.dataclass(frozen=True)
class _PairLoss:
    """Counterfactual logit pairing (``clp``: cross-entropy + λ·the squared logit gap to the
    counterfactual) or augmentation (``augment``: cross-entropy on both)."""

    mode: str

    def __call__(self, p, data, stats, apply, obj, a):
        full = models.merge(p, stats)
        logits, logits_cf = apply(full, data["x"]), apply(full, data["x_cf"])
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, data["y"]))
        if self.mode == "augment":
            return 0.5 * (ce + jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_cf, data["y"])))
        return ce + data["lam"] * jnp.mean(jnp.sum((logits - logits_cf) ** 2, axis=-1))


def counterfactual_training(
    model: models.Network,
    task: Task,
    *,
    attribute: str,
    values,
    columns,
    scm: SCM | None = None,
    mode: str = "clp",
    lam: float = 1.0,
    steps: int = 300,
    learning_rate: float = 1e-3,
    a: float = 0.2,
    max_drop: float | None = None,
    eval_every: int = 10,
    seed: int = 0,
) -> RepairResult:
    """Feature-level repair of a tabular model: ``mode="clp"`` or ``"augment"`` (see the module doc).

    ``columns`` names the model's input features (the SCM's columns); ``attribute`` is the sensitive
    column and ``values`` the values it takes. Training uses the task's repair split (``accuracy``
    batch), checkpoint selection its select split, and the report its test split.
    """
    if mode not in ("clp", "augment"):
        raise ValueError(f"mode must be 'clp' or 'augment', got {mode!r}")
    columns = list(columns)
    if attribute not in columns:
        raise ValueError(f"unknown attribute {attribute!r}; the columns are {columns}")
    if len(columns) != int(np.prod(model.input_shape)):
        raise ValueError(f"{len(columns)} column names for a model with input shape {model.input_shape}")
    task.check()
    t = time.perf_counter()
    col = columns.index(attribute)
    train = task.data["repair"]["accuracy"]
    key = jax.random.key(seed)
    x_cf = counterfactual_pairs(train["x"], col, values, scm=scm, attribute=attribute, key=key)
    apply, args, static = problem_data(model, task)  # batch statistics and the input normaliser stay fixed
    stats = args.stats
    data = {"x": jnp.asarray(train["x"]), "y": jnp.asarray(train["y"]), "x_cf": jnp.asarray(x_cf),
            "lam": jnp.float32(lam)}
    best, best_f, losses, sel = optimise_with_selection(
        _PairLoss(mode), data, args.params, stats, args.data_s, args.objective, jnp.float32(a),
        jnp.float32(learning_rate), budget(max_drop), apply=apply, objective=static, steps=steps, eval_every=eval_every)
    method = f"counterfactual-{mode}" + ("" if scm is not None else "-flip")
    repaired = repaired_model(model, models.merge(jax.device_get(best), stats), {"task": task.name, "method": method})
    train_s = time.perf_counter() - t
    before, after = task.report(model), task.report(repaired)
    if scm is not None:
        xt = task.data["test"]["accuracy"]["x"]
        for d, m in ((before, model), (after, repaired)):
            cf = counterfactual_fairness(m, scm, xt, attribute, values, decide=task.objective.decide)
            d["counterfactual_violation"] = cf["counterfactual_violation"]
    config = {"mode": mode, "lam": lam, "steps": steps, "learning_rate": learning_rate, "a": a, "max_drop": max_drop,
              "attribute": attribute, "scm": scm.to_json() if scm is not None else None, "seed": seed}
    return RepairResult(task.name, method, repaired, [], {}, before, after,
                        {"select_fitness": float(best_f), "history": {"loss": losses, "select": sel}},
                        {"train": train_s}, config)

