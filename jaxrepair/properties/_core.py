"""Properties as pure functions ``(apply_fn, params, batch) -> per-example violation`` (0/1 floats).

A :class:`Property` also knows how to turn violations into a rate; :func:`combine` weights several
into one objective, like ``optax.chain`` composes transforms. Fairness flips follow CARE: an input
violates individual fairness if setting its sensitive attribute to *any other* value changes the
predicted class.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Property:
    """A named per-example violation function. ``rate`` is the mean violation over a batch."""

    name: str
    violation: Callable  # (apply_fn, params, batch) -> [B]

    def __call__(self, apply_fn, params, batch):
        return self.violation(apply_fn, params, batch)

    def rate(self, apply_fn, params, batch) -> jax.Array:
        return jnp.mean(self.violation(apply_fn, params, batch))


def _is_data(leaf) -> bool:
    return isinstance(leaf, (int, float, np.ndarray, np.generic, jax.Array)) and not isinstance(leaf, bool)


@dataclasses.dataclass(frozen=True)
class Static:
    """The part of a property (or objective) that shapes a compiled program; hashable."""

    treedef: object
    data_positions: tuple[int, ...]
    static_leaves: tuple

    def join(self, data):
        """The property rebuilt from its static part and ``data`` (arrays or tracers)."""
        leaves, it_d, it_s = [], iter(data), iter(self.static_leaves)
        for i in range(len(self.data_positions) + len(self.static_leaves)):
            leaves.append(next(it_d) if i in self.data_positions else next(it_s))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def split(prop) -> tuple[Static, tuple]:
    """Splits a property into what shapes a program and its numbers (sensitive column and values,
    target class, weights — the registered data fields), so one compiled program serves every
    property of the same kind: ``static.join(numbers)`` rebuilds it inside ``jit``."""
    leaves, treedef = jax.tree_util.tree_flatten(prop)
    pos = tuple(i for i, leaf in enumerate(leaves) if _is_data(leaf))
    static = tuple(leaf for i, leaf in enumerate(leaves) if i not in pos)
    return Static(treedef, pos, static), tuple(jnp.asarray(leaves[i]) for i in pos)


@jax.jit(static_argnames=("apply_fn", "static"))
def _violations(params, batch, numbers, *, apply_fn, static):
    return static.join(numbers)(apply_fn, params, batch)


def violations(prop, apply_fn, params, batch) -> np.ndarray:
    """``prop``'s per-example violations on a batch (``{"x", ...}`` or just the inputs), by one
    compiled program per property kind and batch shape (reused by every report, whatever the
    property's numbers or the params)."""
    batch = {k: jnp.asarray(v) for k, v in (batch.items() if isinstance(batch, dict) else [("x", batch)])}
    static, numbers = split(prop)
    return np.asarray(_violations(params, batch, numbers, apply_fn=apply_fn, static=static))


@jax.jit(static_argnames=("apply_fn", "decide"))
def _predict(params, x, *, apply_fn, decide):
    return _pred(apply_fn, params, x, decide)


def predict(apply_fn, params, x, decide: str = "argmax") -> np.ndarray:
    """Predicted classes (``decide="argmin"`` for ACAS Xu advisories), compiled once per shape."""
    return np.asarray(_predict(params, jnp.asarray(x), apply_fn=apply_fn, decide=decide))


def _pred(apply_fn, params, x, decide: str = "argmax"):
    out = apply_fn(params, x)
    if decide == "argmin":  # ACAS Xu: the advisory is the minimal score
        return jnp.argmin(out, axis=-1)
    if decide != "argmax":
        raise ValueError(f"decide must be 'argmax' or 'argmin', got {decide!r}")
    return jnp.argmax(out, axis=-1)


def _log_probs(apply_fn, params, x, decide: str = "argmax"):
    out = apply_fn(params, x)
    return jax.nn.log_softmax(-out if decide == "argmin" else out, axis=-1)


@dataclasses.dataclass(frozen=True)
class Misclassification:
    """Violation = the predicted class differs from ``batch['y']``; accuracy = 1 − rate."""

    name: str = "misclassification"
    decide: str = "argmax"  # "argmin" for networks whose decision is the minimal output (ACAS Xu)

    def __call__(self, apply_fn, params, batch):
        return (_pred(apply_fn, params, batch["x"], self.decide) != batch["y"]).astype(jnp.float32)

    def rate(self, apply_fn, params, batch):
        return jnp.mean(self(apply_fn, params, batch))

    def surrogate(self, apply_fn, params, batch):
        """Differentiable stand-in: cross-entropy of the label."""
        lp = _log_probs(apply_fn, params, batch["x"], self.decide)
        return -jnp.take_along_axis(lp, batch["y"][:, None].astype(jnp.int32), axis=-1)[:, 0]


def accuracy(apply_fn, params, batch, decide: str = "argmax") -> jax.Array:
    return 1.0 - Misclassification(decide=decide).rate(apply_fn, params, batch)


@dataclasses.dataclass(frozen=True)
class IndividualFairness:
    """CARE's individual fairness: violated if some other value of the sensitive attribute changes
    the predicted class. ``values`` are all values of the attribute (column ``column``)."""

    column: int
    values: tuple[float, ...]
    name: str = "individual_fairness"

    def __call__(self, apply_fn, params, batch):
        x = batch["x"]
        base = _pred(apply_fn, params, x)
        vals = jnp.asarray(self.values, x.dtype)
        flipped = jax.vmap(lambda v: _pred(apply_fn, params, x.at[:, self.column].set(v)))(vals)  # [V, B]
        return jnp.any(flipped != base[None], axis=0).astype(jnp.float32)

    def rate(self, apply_fn, params, batch):
        return jnp.mean(self(apply_fn, params, batch))

    def surrogate(self, apply_fn, params, batch):
        """Differentiable stand-in: max over values of the total-variation distance between the
        predicted class distributions of ``x`` and ``x`` with the attribute set to that value."""
        x = batch["x"]
        p = jax.nn.softmax(apply_fn(params, x), axis=-1)
        vals = jnp.asarray(self.values, x.dtype)
        pf = jax.vmap(lambda v: jax.nn.softmax(apply_fn(params, x.at[:, self.column].set(v)), axis=-1))(vals)
        return jnp.max(0.5 * jnp.sum(jnp.abs(pf - p[None]), axis=-1), axis=0)


def wilson_interval(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate ``k/n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def sample_domain(key, low: np.ndarray, high: np.ndarray, n: int, *, integer: Sequence[bool] | None = None):
    """Uniform samples of a box ``[low, high]`` (integers on integer columns), seeded by ``key``."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    u = jax.random.uniform(key, (n, low.shape[0]))
    if integer is None:
        return low + u * (high - low)
    ints = jnp.floor(low + u * (high - low + 1)).clip(low, high)
    return jnp.where(jnp.asarray(integer), ints, low + u * (high - low))


def sampled_rate(prop, apply_fn, params, x_pool, *, key, num_samples: int = 10_000) -> dict:
    """Violation rate over a finite pool of inputs with a 95% bootstrap interval.

    The pool is finite, so its rate is computed exactly (every row once); the interval is the
    percentile bootstrap over its rows (``num_samples`` resamples, seeded by ``key``), i.e. the
    uncertainty that comes from having only these rows — not a binomial interval over draws with
    replacement, which would shrink without bound however small the pool."""
    x_pool = jnp.asarray(x_pool)
    n = int(x_pool.shape[0])
    if n == 0:
        raise ValueError("sampled_rate needs a non-empty pool of inputs")
    v = violations(prop, apply_fn, params, x_pool).astype(np.float64)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    means = np.empty(num_samples)
    for i in range(0, num_samples, 1000):  # resample in blocks: memory stays at 1000 x n
        m = min(1000, num_samples - i)
        means[i : i + m] = v[rng.integers(0, n, size=(m, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"rate": float(v.mean()), "ci95": [float(lo), float(hi)], "num_rows": n, "num_resamples": num_samples,
            "interval": "percentile bootstrap over the pool's rows"}


@dataclasses.dataclass(frozen=True)
class Combined:
    """``Σ w_i · violation_i`` per example, e.g. CARE's ``(1−a)·violation + a·misclassification``."""

    terms: tuple  # ((weight, property), ...)
    name: str = "combined"

    def __call__(self, apply_fn, params, batch):
        return sum(w * p(apply_fn, params, batch) for w, p in self.terms)

    def rate(self, apply_fn, params, batch):
        return sum(w * p.rate(apply_fn, params, batch) for w, p in self.terms)

    def surrogate(self, apply_fn, params, batch):
        return sum(w * p.surrogate(apply_fn, params, batch) for w, p in self.terms)


jax.tree_util.register_dataclass(IndividualFairness, data_fields=["column", "values"], meta_fields=["name"])
jax.tree_util.register_dataclass(Combined, data_fields=["terms"], meta_fields=["name"])


def combine(*weighted) -> Combined:
    """``combine((0.8, fairness), (0.2, Misclassification()))``."""
    return Combined(tuple((float(w), p) for w, p in weighted))


@dataclasses.dataclass(frozen=True)
class AttackSuccess:
    """BadNets backdoor: violated when the *triggered* input is classified as ``target``; only inputs
    whose true label is not the target count (batch key ``y``; others get weight 0 via ``eligible``)."""

    trigger: object  # jaxrepair.data.Trigger
    target: int
    name: str = "attack_success"

    def triggered(self, batch):
        """The triggered inputs: ``batch["x_trig"]`` when given (inputs already stamped, or their values at
        a site for a network cut there: ``jr.repair.lower``), else ``x`` with the trigger stamped on."""
        return batch["x_trig"] if "x_trig" in batch else self.trigger.stamp(batch["x"])

    def __call__(self, apply_fn, params, batch):
        hit = _pred(apply_fn, params, self.triggered(batch)) == self.target
        return (hit & (batch["y"] != self.target)).astype(jnp.float32)

    def eligible(self, batch):
        return (batch["y"] != self.target).astype(jnp.float32)

    def rate(self, apply_fn, params, batch):
        """Attack success rate over the eligible inputs."""
        e = self.eligible(batch)
        return jnp.sum(self(apply_fn, params, batch)) / jnp.maximum(jnp.sum(e), 1.0)

    def surrogate(self, apply_fn, params, batch):
        """Differentiable stand-in: the target-class probability of triggered eligible inputs."""
        p = jax.nn.softmax(apply_fn(params, self.triggered(batch)), axis=-1)[:, self.target]
        return p * self.eligible(batch)


jax.tree_util.register_dataclass(AttackSuccess, data_fields=["target"], meta_fields=["trigger", "name"])


@dataclasses.dataclass(frozen=True)
class CounterfactualInvariance:
    """Violated when an input and its counterfactual (batch keys ``x``, ``x_cf``: the same example
    with only a spurious feature changed, e.g. a border's colour) get different predicted classes."""

    name: str = "counterfactual_invariance"

    def __call__(self, apply_fn, params, batch):
        return (_pred(apply_fn, params, batch["x"]) != _pred(apply_fn, params, batch["x_cf"])).astype(jnp.float32)

    def rate(self, apply_fn, params, batch):
        return jnp.mean(self(apply_fn, params, batch))

    def surrogate(self, apply_fn, params, batch):
        """Differentiable stand-in: the total-variation distance between the predicted class
        distributions of ``x`` and ``x_cf``."""
        p, q = (jax.nn.softmax(apply_fn(params, batch[k]), axis=-1) for k in ("x", "x_cf"))
        return 0.5 * jnp.sum(jnp.abs(p - q), axis=-1)


jax.tree_util.register_dataclass(CounterfactualInvariance, data_fields=[], meta_fields=["name"])


def failing_set(apply_fn, params, batch) -> dict:
    """The misclassified inputs of ``batch`` (Arachne-style repair target): a batch on which
    :class:`Misclassification` is 1 everywhere before repair and must become 0."""
    wrong = np.asarray(Misclassification()(apply_fn, params, batch)) > 0
    return {k: np.asarray(v)[wrong] for k, v in batch.items()}
