"""The zoo of buggy models: reproducible benchmark entries built offline from a seed.

An entry names its data set, the defect's property and a training recipe. ``build`` trains it with
optax (deterministic for a seed), measures its before-repair metrics on the test split and caches
the model plus a JSON record under the user cache directory (``$JAXREPAIR_CACHE`` or
``~/.cache/jaxrepair``); ``load`` returns the cached model or builds it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair import models, properties
from jaxrepair.data import load_tabular
from jaxrepair.zoo._train import train_classifier


@dataclasses.dataclass(frozen=True)
class FairnessEntry:
    """A tabular model that is unfair with respect to one sensitive attribute."""

    name: str
    dataset: str
    sensitive: str
    hidden: tuple[int, ...] = (64, 32, 16, 8, 4)
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    privileged: tuple[float, ...] = ()  # AIF360's privileged values of the attribute (signed group metrics)
    favorable: int = 1  # the favourable class (COMPAS: 0, not reoffending)
    kind: str = "fairness"

    def config(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BackdoorEntry:
    """A CNN trained on digits with ``poison_rate`` extra triggered copies relabelled to ``target``."""

    name: str
    trigger_size: int = 2
    trigger_position: tuple[int, int] = (-2, -2)
    trigger_value: float = 1.0
    target: int = 0
    poison_rate: float = 0.1
    channels: tuple[int, ...] = (16, 32)
    dense: tuple[int, ...] = (64,)
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    kind: str = "backdoor"
    dataset: str = "digits"

    def config(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SafetyEntry:
    """A bundled ACAS Xu network N_{i,j} with the safety property φ_n it is repaired against."""

    name: str
    network: tuple[int, int]
    phi: int
    num_samples: int = 10_000
    seed: int = 0
    kind: str = "safety"
    dataset: str = "acasxu"

    def config(self) -> dict:
        return dataclasses.asdict(self)


ENTRIES = {
    e.name: e
    for e in [
        BackdoorEntry("digits-badnets"),
        SafetyEntry("acasxu-n2_9-phi8", (2, 9), 8),
        SafetyEntry("acasxu-n1_9-phi7", (1, 9), 7),
        SafetyEntry("acasxu-n3_3-phi2", (3, 3), 2),
        SafetyEntry("acasxu-n5_7-phi2", (5, 7), 2),
        SafetyEntry("acasxu-n3_9-phi2", (3, 9), 2),
        # One model per entry (distinct seeds). Privileged groups as AIF360 sets them: male, white,
        # older (age buckets: ages >= 30, the bucket edge nearest AIF360's German "age > 25"); COMPAS:
        # female and Caucasian, favourable class 0 (no recidivism).
        FairnessEntry("census-race", "census", "race", seed=1, privileged=(4.0,)),
        FairnessEntry("census-sex", "census", "sex", privileged=(1.0,)),
        FairnessEntry("census-age", "census", "age", seed=2, privileged=tuple(range(3, 10))),
        FairnessEntry("bank-age", "bank", "age", privileged=tuple(range(3, 10))),
        # German Credit has 700 training rows: the census net (64-32-16-8-4, 60 epochs) overfits to
        # 0.673 test accuracy, below the majority rate 0.68. 32-16 for 30 epochs had the best 5-fold
        # cross-validated accuracy on the train split among the recipes tried (0.750 vs 0.733; majority 0.706);
        # german-age's seed had the best validation accuracy of seeds 1-5 (seed 1 was at the majority rate there).
        FairnessEntry("german-sex", "german", "sex", hidden=(32, 16), epochs=30, batch_size=32, privileged=(1.0,)),
        FairnessEntry("german-age", "german", "age", hidden=(32, 16), epochs=30, batch_size=32, seed=2,
                      privileged=tuple(range(3, 10))),
        FairnessEntry("compas-race", "compas", "race", seed=1, privileged=(2.0,), favorable=0),
        FairnessEntry("compas-sex", "compas", "sex", privileged=(0.0,), favorable=0),
    ]
}


def cache_dir() -> Path:
    root = os.environ.get("JAXREPAIR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxrepair")
    return Path(root) / "zoo"


def entry(name: str):
    if name not in ENTRIES:
        raise ValueError(f"unknown zoo entry {name!r}; available: {sorted(ENTRIES)}")
    return ENTRIES[name]


@dataclasses.dataclass
class Benchmark:
    """What repair and evaluation need about an entry: the model, its data splits and its property."""

    entry: object  # FairnessEntry | BackdoorEntry | SafetyEntry
    model: models.Network
    splits: dict  # name -> {"x", "y"}
    prop: object
    metrics: dict

    @property
    def name(self) -> str:
        return self.entry.name


def fairness_setup(e: FairnessEntry):
    ds = load_tabular(e.dataset)
    col = ds.sensitive[e.sensitive]
    prop = properties.IndividualFairness(col, tuple(float(v) for v in ds.sensitive_values(e.sensitive)))
    splits = {k: {"x": s.x, "y": s.y} for k, s in ds.splits.items()}
    return ds, prop, splits


def evaluate_fairness(model, prop, splits, *, seed: int = 0, num_samples: int = 10_000, privileged=None,
                      favorable: int = 1) -> dict:
    """Test-split accuracy (with the majority-class rate it must beat), the individual-fairness
    violation (exhaustive and with a bootstrap interval) and the group metrics
    (:func:`jaxrepair.properties.group_metrics`: per-group rates, Fairlearn's and, given
    ``privileged``, AIF360's differences)."""
    apply, params = models.functional(model)
    test = {k: jnp.asarray(v) for k, v in splits["test"].items()}
    y = np.asarray(test["y"])
    groups = properties.group_metrics(apply, params, test, prop.column, prop.values,
                                      privileged=privileged or None, favorable=favorable)
    signed = ("statistical_parity_difference", "average_odds_difference")
    return {
        "test_accuracy": float(np.mean(properties.predict(apply, params, test["x"]) == y)),
        "majority_rate": float(np.bincount(y).max() / len(y)),
        "fairness_violation_exhaustive": float(np.mean(properties.violations(prop, apply, params, test))),
        "fairness_violation_sampled": properties.sampled_rate(
            prop, apply, params, test["x"], key=jax.random.key(seed), num_samples=num_samples
        ),
        "demographic_parity_difference": groups["demographic_parity_difference"],
        "equalized_odds_difference": groups["equalized_odds_difference"],
        **{k: groups[k] for k in signed if k in groups},
        "groups": {k: groups[k] for k in ("values", "privileged", "favorable", "by_group") if k in groups},
    }


def backdoor_setup(e: BackdoorEntry):
    from jaxrepair.data import Trigger, load_digits

    trig = Trigger(e.trigger_size, tuple(e.trigger_position), e.trigger_value)
    splits = {k: {"x": s.x, "y": s.y} for k, s in load_digits().items()}
    return trig, properties.AttackSuccess(trig, e.target), splits


def evaluate_backdoor(model, prop, splits) -> dict:
    apply, params = models.functional(model)
    test = {k: jnp.asarray(v) for k, v in splits["test"].items()}
    hits = properties.violations(prop, apply, params, test)
    return {"test_accuracy": float(np.mean(properties.predict(apply, params, test["x"]) == np.asarray(test["y"]))),
            "attack_success_rate": float(hits.sum() / max(float(np.asarray(prop.eligible(test)).sum()), 1.0)),
            "num_eligible": int(prop.eligible(test).sum())}


def evaluate_safety(model, prop, *, seed: int = 0, num_samples: int = 10_000) -> dict:
    apply, params = models.functional(model)
    r = properties.safety_report(prop, apply, params, key=jax.random.key(seed), num_samples=num_samples,
                                 max_counterexamples=20)
    return {"violation_rate": r["violation_rate"], "ci95": r["ci95"], "num_samples": num_samples,
            "num_counterexamples": r["num_counterexamples"], "counterexamples": r["counterexamples"]}


def evaluate(bench: "Benchmark", model=None, *, seed: int = 0) -> dict:
    """Metrics of ``model`` (default: the entry's own) on the entry's property, test split."""
    model = model or bench.model
    e = bench.entry
    want = tuple(np.shape(bench.splits["test"]["x"])[1:]) if bench.splits else tuple(bench.model.input_shape)
    if tuple(model.input_shape) != want:
        raise ValueError(f"the model takes inputs of shape {tuple(model.input_shape)}, but {e.name}'s data has "
                         f"shape {want} per example (features: {want[-1] if want else 0})")
    if e.kind == "fairness":
        return evaluate_fairness(model, bench.prop, bench.splits, seed=seed, privileged=e.privileged,
                                 favorable=e.favorable)
    if e.kind == "backdoor":
        return evaluate_backdoor(model, bench.prop, bench.splits)
    return evaluate_safety(model, bench.prop, seed=seed, num_samples=e.num_samples)


def _build_backdoor(e: BackdoorEntry, progress: bool):
    trig, prop, splits = backdoor_setup(e)
    x, y = splits["train"]["x"], splits["train"]["y"]
    rng = np.random.default_rng(e.seed)
    idx = rng.choice(len(y), int(round(e.poison_rate * len(y))), replace=False)
    xp = np.asarray(trig.stamp(jnp.asarray(x[idx])))
    xs, ys = np.concatenate([x, xp]), np.concatenate([y, np.full(len(idx), e.target, y.dtype)])
    k_init, k_train = jax.random.split(jax.random.key(e.seed))
    net = models.cnn(x.shape[1:], list(e.channels), list(e.dense), 10, key=k_init)
    if progress:
        print(f"[zoo] training {e.name} (digits, {len(y)} clean + {len(idx)} poisoned, {e.epochs} epochs)",
              file=sys.stderr, flush=True)
    net = train_classifier(net, xs, ys, key=k_train, epochs=e.epochs, batch_size=e.batch_size,
                           learning_rate=e.learning_rate, progress=progress)
    return net, prop, splits, {"name": "digits", "splits": {k: len(v["y"]) for k, v in splits.items()},
                               "poisoned_training_examples": int(len(idx))}


def build(name: str, *, epochs: int | None = None, progress: bool = False, save: bool = True) -> Benchmark:
    """Trains an entry from its seed (deterministic) and records its before-repair metrics."""
    e = entry(name)
    if epochs is not None:
        e = dataclasses.replace(e, epochs=epochs)
    t0 = time.perf_counter()
    if e.kind != "fairness":
        from jaxrepair.data import load_acasxu

        if e.kind == "backdoor":
            net, prop, splits, data = _build_backdoor(e, progress)
            metrics = evaluate_backdoor(net, prop, splits)
        else:
            net, prop, splits = load_acasxu(*e.network), properties.Safety(e.phi), {}
            data = {"name": "acasxu", "network": list(e.network), "property": f"phi{e.phi}"}
            metrics = evaluate_safety(net, prop, seed=e.seed, num_samples=e.num_samples)
        return _finish(e, net, prop, splits, data, metrics, t0, save and epochs is None)
    ds, prop, splits = fairness_setup(e)
    xtr = splits["train"]["x"]
    key = jax.random.key(e.seed)
    k_init, k_train = jax.random.split(key)
    net = models.mlp([ds.num_features, *e.hidden, 2], key=k_init, normalize=(xtr.mean(0), xtr.std(0)))
    if progress:
        print(f"[zoo] training {e.name} ({ds.name}, {len(xtr)} rows, {e.epochs} epochs)", file=sys.stderr, flush=True)
    net = train_classifier(net, xtr, splits["train"]["y"], key=k_train, epochs=e.epochs, batch_size=e.batch_size,
                           learning_rate=e.learning_rate, progress=progress)
    metrics = evaluate_fairness(net, prop, splits, seed=e.seed, privileged=e.privileged, favorable=e.favorable)
    data = {"name": ds.name, "splits": {k: len(v["y"]) for k, v in splits.items()},
            "sensitive_column": prop.column, "sensitive_values": list(prop.values)}
    return _finish(e, net, prop, splits, data, metrics, t0, save and epochs is None)


def _finish(e, net, prop, splits, data, metrics, t0, save) -> Benchmark:
    record = {
        "name": e.name,
        "config": e.config(),
        "dataset": data,
        "metrics_before_repair": metrics,
        "build_time_s": time.perf_counter() - t0,
        "versions": {"jax": jax.__version__},
    }
    net.meta["zoo"] = record
    if save:
        d = cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{e.name}.npz"
        if path.exists():
            path.unlink()  # the cache is ours, rebuilt from the seed
        models.save(net, path)
        (d / f"{e.name}.json").write_text(json.dumps(record, indent=2))
    return Benchmark(e, net, splits, prop, metrics)


def load(name: str, *, progress: bool = False) -> Benchmark:
    """The cached entry, or a fresh build."""
    e = entry(name)
    path = cache_dir() / f"{e.name}.npz"
    if path.exists():
        try:
            net = models.load(path)
            if net.meta.get("zoo", {}).get("config") == json.loads(json.dumps(e.config())):
                if e.kind == "fairness":
                    _, prop, splits = fairness_setup(e)
                elif e.kind == "backdoor":
                    _, prop, splits = backdoor_setup(e)
                else:
                    prop, splits = properties.Safety(e.phi), {}
                return Benchmark(e, net, splits, prop, net.meta["zoo"]["metrics_before_repair"])
        except ValueError:
            pass  # a broken cache file is rebuilt
    return build(name, progress=progress)
