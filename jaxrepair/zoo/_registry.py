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
    kind: str = "fairness"

    def config(self) -> dict:
        return dataclasses.asdict(self)


ENTRIES = {
    e.name: e
    for e in [
        FairnessEntry("census-race", "census", "race"),
        FairnessEntry("census-sex", "census", "sex"),
        FairnessEntry("census-age", "census", "age"),
        FairnessEntry("bank-age", "bank", "age"),
        FairnessEntry("german-sex", "german", "sex", epochs=60, batch_size=32),
        FairnessEntry("german-age", "german", "age", epochs=60, batch_size=32),
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

    entry: FairnessEntry
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


def evaluate_fairness(model, prop, splits, *, seed: int = 0, num_samples: int = 10_000) -> dict:
    apply, params = models.functional(model)
    test = {k: jnp.asarray(v) for k, v in splits["test"].items()}
    col = prop.column
    return {
        "test_accuracy": float(properties.accuracy(apply, params, test)),
        "fairness_violation_exhaustive": float(prop.rate(apply, params, test)),
        "fairness_violation_sampled": properties.sampled_rate(
            prop, apply, params, test["x"], key=jax.random.key(seed), num_samples=num_samples
        ),
        "demographic_parity_difference": float(properties.demographic_parity_difference(apply, params, test, col)),
        "equalized_odds_difference": float(properties.equalized_odds_difference(apply, params, test, col)),
    }


def build(name: str, *, epochs: int | None = None, progress: bool = False, save: bool = True) -> Benchmark:
    """Trains an entry from its seed (deterministic) and records its before-repair metrics."""
    e = entry(name)
    if epochs is not None:
        e = dataclasses.replace(e, epochs=epochs)
    t0 = time.perf_counter()
    ds, prop, splits = fairness_setup(e)
    xtr = splits["train"]["x"]
    key = jax.random.key(e.seed)
    k_init, k_train = jax.random.split(key)
    net = models.mlp([ds.num_features, *e.hidden, 2], key=k_init, normalize=(xtr.mean(0), xtr.std(0)))
    if progress:
        print(f"[zoo] training {e.name} ({ds.name}, {len(xtr)} rows, {e.epochs} epochs)", file=sys.stderr, flush=True)
    net = train_classifier(net, xtr, splits["train"]["y"], key=k_train, epochs=e.epochs, batch_size=e.batch_size,
                           learning_rate=e.learning_rate, progress=progress)
    metrics = evaluate_fairness(net, prop, splits, seed=e.seed)
    record = {
        "name": e.name,
        "config": e.config(),
        "dataset": {"name": ds.name, "splits": {k: len(v["y"]) for k, v in splits.items()},
                    "sensitive_column": prop.column, "sensitive_values": list(prop.values)},
        "metrics_before_repair": metrics,
        "build_time_s": time.perf_counter() - t0,
        "versions": {"jax": jax.__version__},
    }
    net.meta["zoo"] = record
    if save and epochs is None:
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
            if net.meta.get("zoo", {}).get("config") == e.config():
                _, prop, splits = fairness_setup(e)
                return Benchmark(e, net, splits, prop, net.meta["zoo"]["metrics_before_repair"])
        except ValueError:
            pass  # a broken cache file is rebuilt
    return build(name, progress=progress)
