"""Repair tasks: the objective, the three data splits, the localisation effect, the test report.

The objective is CARE's ``(1−a)·violation + a·(1−accuracy)`` where ``violation`` is the rate of
any property (a :func:`jaxrepair.properties.combine` of several is one property) and accuracy
agrees with labels (``decide='argmin'`` for networks that decide by the minimal output).

Every split holds a ``property`` batch (where the violation is measured) and an ``accuracy`` batch.
The search optimises on ``repair``, selects and early-stops on ``select``, and the figures reported
come from ``test`` (for zoo entries: the same metrics, seeds and samples as the zoo's
before-repair record).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair import causal, models, properties


@dataclasses.dataclass(frozen=True)
class Objective:
    """``(1−a)·prop.rate + a·(1−accuracy)``.

    :meth:`split` separates what shapes a compiled program (the property's kind, ``decide``) from its
    numbers (sensitive column and values, target class, weights), which are passed as data: two
    tasks that differ only in those numbers share one compiled search.
    """

    prop: object
    decide: str = "argmax"

    def split(self) -> tuple[properties.Static, tuple]:
        """``(static part, numbers)``; ``static.join(numbers)`` rebuilds the objective."""
        return properties.split(self)

    def metrics(self, apply_fn, params, data) -> tuple[jax.Array, jax.Array]:
        v = self.prop.rate(apply_fn, params, data["property"])
        acc = properties.accuracy(apply_fn, params, data["accuracy"], self.decide)
        return v, acc

    def accuracy(self, apply_fn, params, data) -> jax.Array:
        return properties.accuracy(apply_fn, params, data["accuracy"], self.decide)

    def fitness(self, apply_fn, params, data, a) -> tuple[jax.Array, jax.Array, jax.Array]:
        v, acc = self.metrics(apply_fn, params, data)
        f = (1.0 - a) * v + a * (1.0 - acc)
        return jnp.where(jnp.isfinite(f), f, jnp.inf), v, acc

    def surrogate(self, apply_fn, params, data, a) -> jax.Array:
        """Differentiable stand-in for fine-tuning baselines."""
        s = jnp.mean(self.prop.surrogate(apply_fn, params, data["property"]))
        ce = jnp.mean(properties.Misclassification(decide=self.decide).surrogate(apply_fn, params, data["accuracy"]))
        return (1.0 - a) * s + a * ce


jax.tree_util.register_dataclass(Objective, data_fields=["prop"], meta_fields=["decide"])


def degeneracy(model, batch: dict, decide: str = "argmax") -> dict:
    """Flags a degenerate model on a labelled batch: one that predicts a single class for every input,
    or whose accuracy is at or below the majority-class rate (it does no better than a constant).

    Returns ``{"degenerate": None | reason, "predicted_classes": n, "majority_rate": r}``.
    """
    apply, params = models.functional(model)
    return degeneracy_of_predictions(properties.predict(apply, params, batch["x"], decide), batch["y"])


def degeneracy_of_predictions(pred, y) -> dict:
    """:func:`degeneracy` from predicted classes (for a model that is not one network)."""
    pred = np.asarray(pred)
    y = np.asarray(y).astype(np.int64)
    majority = float(np.bincount(y).max() / len(y)) if len(y) else float("nan")
    acc = float(np.mean(pred == y)) if len(y) else float("nan")
    n_pred = int(len(np.unique(pred)))
    reason = None
    if n_pred <= 1:
        reason = f"constant predictor (every test input gets class {int(pred[0])})" if len(pred) else "no test inputs"
    elif acc <= majority + 1e-12:
        reason = f"accuracy {acc:.4f} is at or below the majority-class rate {majority:.4f}"
    return {"degenerate": reason, "predicted_classes": n_pred, "majority_rate": majority}


@jax.jit(static_argnames=("apply", "objective"))
def _metrics(params, data, numbers, *, apply, objective):
    return objective.join(numbers).metrics(apply, params, data)


def metrics(objective: Objective, model, data) -> tuple[float, float]:
    """``(violation rate, accuracy)`` of ``model`` on a split, by one compiled program per
    objective kind and data shape (reused across models, repairs and reports)."""
    apply, params = models.functional(model)
    static, numbers = objective.split()
    v, acc = _metrics(params, data, numbers, apply=apply, objective=static)
    return float(v), float(acc)


@dataclasses.dataclass
class Task:
    """Everything repair needs about one model and one defect."""

    name: str
    kind: str  # fairness | backdoor | safety | custom
    objective: Objective
    data: dict  # split -> {"property": batch, "accuracy": batch}
    effect: object  # the ACE effect used to localise
    localize_batch: dict
    report_fn: Callable  # model -> dict of test-split metrics (with "violation" and "accuracy")
    info: dict = dataclasses.field(default_factory=dict)

    def report(self, model) -> dict:
        """Test-split metrics of ``model``, with the degenerate-result check (:func:`degeneracy`)."""
        out = dict(self.report_fn(model))
        out.update(degeneracy(model, self.data["test"]["accuracy"], self.objective.decide))
        return out

    def check(self) -> None:
        for split in ("repair", "select", "test"):
            if split not in self.data:
                raise ValueError(f"task {self.name!r} has no {split!r} split; it has {sorted(self.data)}")
            for part in ("property", "accuracy"):
                if part not in self.data[split]:
                    raise ValueError(f"task {self.name!r}: split {split!r} needs a {part!r} batch")
                batch = self.data[split][part]
                models.check_finite(batch, f"task {self.name!r} {split}/{part} data")
                if "x" not in batch or int(np.shape(batch["x"])[0]) == 0:
                    raise ValueError(f"task {self.name!r}: the {split}/{part} batch is empty (it needs rows in 'x')")
                if "y" in batch:
                    y = np.asarray(batch["y"])
                    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
                        raise ValueError(f"task {self.name!r}: {split}/{part} labels 'y' must be class indices; "
                                         f"got non-integer values such as {y[y != np.round(y)][:3].tolist()}")

    def check_model(self, model) -> None:
        """Checks that the model fits the task's data: input shape and label range."""
        self.check()
        n_out = int(models.sites(model)[model.graph.output].shape[-1])
        for split, parts in self.data.items():
            for part, batch in parts.items():
                shape = tuple(np.shape(batch["x"])[1:])
                if shape != tuple(model.input_shape):
                    raise ValueError(f"task {self.name!r}: {split}/{part} data has per-example shape {shape}; the model "
                                     f"expects {tuple(model.input_shape)}")
                if "y" in batch and len(batch["y"]):
                    y = np.asarray(batch["y"])
                    if y.min() < 0 or y.max() >= n_out:
                        raise ValueError(f"task {self.name!r}: {split}/{part} labels range over {int(y.min())}.."
                                         f"{int(y.max())}, but the model has {n_out} outputs (classes 0..{n_out - 1})")


def _jnp(batch):
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _subsample(batch: dict, n: int | None, key) -> dict:
    size = len(batch["x"])
    if n is None or n >= size:
        return _jnp(batch)
    idx = np.sort(np.asarray(jax.random.choice(key, size, (n,), replace=False)))
    return {k: jnp.asarray(np.asarray(v)[idx]) for k, v in batch.items()}


def _both(batch):
    return {"property": batch, "accuracy": batch}


def _split_data(name: str, split: str, batch: dict) -> dict:
    if "property" in batch or "accuracy" in batch:
        if set(batch) != {"property", "accuracy"}:
            raise ValueError(f"task {name!r}: split {split!r} must be one batch or exactly "
                             f"{{'property': batch, 'accuracy': batch}}; it has {sorted(batch)}")
        return {"property": _jnp(batch["property"]), "accuracy": _jnp(batch["accuracy"])}
    return _both(_jnp(batch))


def custom_task(name: str, prop, splits: dict, *, effect, decide: str = "argmax", localize_split: str = "repair",
                localize_batch: dict | None = None, kind: str = "custom") -> Task:
    """A task from your own property and ``{"repair"|"select"|"test": batch}`` splits.

    Each split is one batch ``{"x", "y", ...}`` used for both terms of the objective, or separate
    sets ``{"property": batch, "accuracy": batch}`` (CARE measures the violation on discriminatory
    instances and the accuracy on labelled rows). ACE localises on ``localize_batch`` (default: the
    property batch of ``localize_split``).
    """
    obj = Objective(prop, decide)
    data = {k: _split_data(name, k, v) for k, v in splits.items()}

    def report(model):
        v, acc = metrics(obj, model, data["test"])
        return {"violation": v, "accuracy": acc}

    t = Task(name, kind, obj, data, effect,
             _jnp(localize_batch) if localize_batch is not None else data[localize_split]["property"], report)
    t.check()
    return t


def _zoo_splits(bench, repair_samples, key) -> dict:
    """Repair on a (sub)sample of train, select on val, report on test."""
    return {
        "repair": _both(_subsample(bench.splits["train"], repair_samples, key)),
        "select": _both(_jnp(bench.splits["val"])),
        "test": _both(_jnp(bench.splits["test"])),
    }


def from_zoo(bench, *, repair_samples: int | None = 5000, seed: int = 0) -> Task:
    """The repair task of a zoo entry (``jr.zoo.load(name)``), built by its kind's task builder."""
    if repair_samples is not None and (isinstance(repair_samples, bool) or not isinstance(repair_samples, int)
                                       or repair_samples < 1):
        raise ValueError(f"repair_samples must be a positive integer (or None for the whole train split), got {repair_samples!r}")
    e = bench.entry
    if e.kind not in TASK_BUILDERS:
        raise ValueError(f"zoo entry {e.name!r} has kind {e.kind!r}, which has no repair task builder "
                         f"(kinds: {sorted(TASK_BUILDERS)})")
    return TASK_BUILDERS[e.kind](bench, key=jax.random.key(seed), seed=seed, repair_samples=repair_samples)


def _zoo_report(bench):
    """The test-split report of a zoo entry: the zoo's evaluation with the kind's violation and
    accuracy figures under the names every task reports (``jr.zoo.KINDS``)."""
    from jaxrepair import zoo

    kind = zoo.KINDS[bench.entry.kind]

    def report(model):
        m = zoo.evaluate(bench, model)
        return {**m, "violation": m[kind.violation], "accuracy": m[kind.accuracy]}

    return report


def _fairness_task(bench, *, key, seed, repair_samples) -> Task:
    prop = bench.prop
    data = _zoo_splits(bench, repair_samples, key)
    effect = causal.Fairness.make(prop.column, prop.values)
    return Task(bench.entry.name, "fairness", Objective(prop), data, effect, data["repair"]["property"],
                _zoo_report(bench), {"sensitive_column": prop.column})


def _backdoor_task(bench, *, key, seed, repair_samples) -> Task:
    prop = bench.prop
    data = _zoo_splits(bench, repair_samples, key)
    rep = data["repair"]["property"]
    eligible = np.asarray(rep["y"]) != prop.target
    # Localise like fairness, with the trigger as the "sensitive attribute": the effect is the
    # target-class probability difference between an input and its triggered copy under the same
    # intervention, so the units that carry the trigger have the largest interventional change.
    clean = rep["x"][jnp.asarray(np.flatnonzero(eligible))]
    loc = {"x": clean, "x_cf": prop.trigger.stamp(clean)}
    effect = causal.CounterfactualPair(prop.target, "prob")
    return Task(bench.entry.name, "backdoor", Objective(prop), data, effect, loc, _zoo_report(bench),
                {"target": prop.target})


def _spurious_task(bench, *, key, seed, repair_samples) -> Task:
    """Repair on training images (border colours as trained) paired with the same images in another
    border colour; the accuracy term is on decorrelated images (colours independent of labels):
    repair on a subsample of train, select on val, report on test."""
    from jaxrepair.data import ColourBorder

    border = ColourBorder(bench.entry.border)
    sp = bench.splits
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))

    def pairs(s):
        return {"x": jnp.asarray(s["x"]), "x_cf": border.paint(jnp.asarray(s["x"]), s["c_cf"]), "y": jnp.asarray(s["y"])}

    def recoloured(s):
        c = rng.integers(0, 10, size=len(s["y"]))  # uniform: independent of the label
        return {"x": border.paint(jnp.asarray(s["x"]), c), "y": jnp.asarray(s["y"])}

    train = _subsample(sp["train"], repair_samples, key)
    data = {"repair": {"property": pairs(train), "accuracy": recoloured(train)},
            "select": {"property": pairs(sp["val"]), "accuracy": _jnp({k: sp["val_decorrelated"][k] for k in ("x", "y")})},
            "test": {"property": pairs(sp["test"]), "accuracy": _jnp({k: sp["test_decorrelated"][k] for k in ("x", "y")})}}

    return Task(bench.entry.name, "spurious", Objective(bench.prop), data, causal.CounterfactualPair(None, "logit"),
                data["repair"]["property"], _zoo_report(bench), {"border": bench.entry.border})


def _domain(model):
    clip = model.graph.node("input.clip")
    return np.asarray(clip.attr["min"], np.float32), np.asarray(clip.attr["max"], np.float32)


def _safety_split(prop, apply, params, key, lo, hi, n_region: int, n_keep: int):
    """Region samples (all violating ones found among ``n_region`` plus ``n_keep`` others) and an
    accuracy batch labelled with the original network's advisories: ``n_keep`` non-violating region
    samples and ``n_keep`` samples of the whole input domain."""
    k1, k2 = jax.random.split(key)
    x = prop.sample(k1, n_region)
    viol, adv = properties.violations(prop, apply, params, x), properties.predict(apply, params, x, "argmin")
    bad, ok = np.flatnonzero(viol > 0), np.flatnonzero(viol == 0)[:n_keep]
    xd = np.asarray(properties.sample_domain(k2, lo, hi, n_keep))
    advd = properties.predict(apply, params, xd, "argmin")
    xs = np.asarray(x)
    scale = float(np.std(np.asarray(apply(params, x[:2048]))))
    return {
        "property": {"x": jnp.asarray(np.concatenate([xs[bad], xs[ok]])), "scale": jnp.asarray(scale)},
        "accuracy": {"x": jnp.asarray(np.concatenate([xs[ok], xd])), "y": jnp.asarray(np.concatenate([adv[ok], advd]))},
    }, int(bad.size)


def _safety_task(bench, *, key, seed: int, repair_samples: int | None) -> Task:
    repair_samples = repair_samples or 5000
    e, prop, model = bench.entry, bench.prop, bench.model
    apply, params = models.functional(model)
    lo, hi = _domain(model)
    base = jax.random.key(10_000 + seed)  # never the zoo's test seed (e.seed)
    repair, n_bad_r = _safety_split(prop, apply, params, jax.random.fold_in(base, 1), lo, hi, 100_000, repair_samples)
    select, n_bad_s = _safety_split(prop, apply, params, jax.random.fold_in(base, 2), lo, hi, 100_000, repair_samples)
    # Test: the zoo's own before-repair samples (seed e.seed) and fresh domain samples.
    xt = prop.sample(jax.random.key(e.seed), e.num_samples)
    xd = properties.sample_domain(jax.random.key(e.seed + 1), lo, hi, e.num_samples)
    adv_t = properties.predict(apply, params, xt, "argmin")
    ok_t = np.asarray(prop(apply, params, {"x": xt})) == 0
    adv_d = properties.predict(apply, params, xd, "argmin")
    test = {"property": {"x": xt}, "accuracy": {"x": xd, "y": jnp.asarray(adv_d)}}
    effect = _SafetyEffect(prop.number, float(repair["property"]["scale"]))

    def report(m):
        from jaxrepair import zoo

        r = zoo.evaluate(bench, m)
        ap, pp = models.functional(m)
        new_t = properties.predict(ap, pp, xt, "argmin")
        new_d = properties.predict(ap, pp, xd, "argmin")
        r.pop("counterexamples", None)
        return {
            **r,
            "violation": r["violation_rate"],
            # drawdown: share of the region's non-violating samples whose advisory changed
            "drawdown": float(np.mean(new_t[ok_t] != adv_t[ok_t])) if ok_t.any() else 0.0,
            "domain_fidelity": float(np.mean(new_d == adv_d)),
            "accuracy": float(np.mean(new_d == adv_d)),
        }

    info = {"violations_in_repair_pool": n_bad_r, "violations_in_select_pool": n_bad_s, "region_pool": 100_000}
    return Task(e.name, "safety", Objective(prop, "argmin"), {"repair": repair, "select": select, "test": test},
                effect, {"x": repair["property"]["x"]}, report, info)


#: task kind -> the builder of a zoo entry's repair task (the zoo's side of each kind: ``jr.zoo.KINDS``).
TASK_BUILDERS = {"fairness": _fairness_task, "backdoor": _backdoor_task, "spurious": _spurious_task,
                 "safety": _safety_task}


@dataclasses.dataclass(frozen=True)
class _SafetyEffect:
    """ACE effect for safety: the continuous violation margin of φ_n (higher = more violating)."""

    number: int
    scale: float = 1.0

    def inputs(self, batch):
        return batch["x"]

    def reduce(self, out, batch):
        return properties.Safety(self.number).margin(out) / self.scale
