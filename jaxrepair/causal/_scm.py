"""Structural causal models over tabular features, and counterfactual fairness (Kusner et al. 2017).

An :class:`SCM` is a DAG over the dataset's columns with additive-noise structural equations
``x_v = f_v(pa_v) + u_v`` (root columns: ``x_v = u_v``), ``f_v`` linear (least squares) or a small MLP
trained with optax. Counterfactuals follow Pearl's three steps:

1. *abduction* — the noise of every column, ``u_v = x_v − f_v(pa_v)`` (exact for additive noise);
2. *action* — ``do(A = a')`` replaces the intervened columns;
3. *prediction* — descendants are recomputed in topological order with their own noise,
   ``x'_v = f_v(pa'_v) + u_v``; non-descendants keep their values.

Categorical columns are integer codes; their counterfactual values are snapped to the nearest code
seen in the data (the codes are treated as ordinal by the equations — a documented simplification).

:func:`default_dag` gives the documented default for the bundled datasets: the protected
attributes (and Census' ``native_country``) are roots, and every other column has all roots as
parents — coarse but conservative (the sensitive attribute may reach every other feature). Pass
your own ``parents`` for finer structure; :func:`edit_dag` derives variants of a DAG (edges dropped or
reversed, columns hidden) to measure how much a conclusion depends on the assumed structure.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

_ROOTS = {
    "census": ("age", "race", "sex", "native_country"),
    "bank": ("age",),
    "german": ("sex", "age", "foreign_worker"),
    "compas": ("sex", "age", "race"),
}


def default_dag(dataset) -> dict[str, list[str]]:
    """``{column: parents}`` for a bundled :class:`~jaxrepair.data.TabularDataset` (see the module doc)."""
    roots = _ROOTS.get(dataset.name)
    if roots is None:
        roots = tuple(dataset.sensitive)
    return {c: ([] if c in roots else list(roots)) for c in dataset.columns}


def edit_dag(parents: Mapping[str, Sequence[str]], *, drop: Sequence[tuple[str, str]] = (),
             reverse: Sequence[tuple[str, str]] = (), hide: Sequence[str] = ()) -> dict[str, list[str]]:
    """A copy of the DAG ``{column: parents}`` with edges dropped, edges reversed and columns hidden.

    Edges are ``(parent, child)`` pairs. A hidden column stands for a variable the modeller cannot
    observe (a latent confounder when it has several children): all its edges are removed, so the
    equations of its former children are fitted without it (their noise absorbs its contribution), and
    it is held at its observed value in every counterfactual — it becomes part of the exogenous noise.
    The input is not modified; edits apply in the order drop, reverse, hide.

    Args:
      parents: ``{column: parent columns}``, e.g. :func:`default_dag`.
      drop: edges to remove.
      reverse: edges ``p -> c`` to turn into ``c -> p``; the result must stay acyclic.
      hide: columns to cut out of the graph.

    Returns:
      The edited ``{column: parents}`` (every column of ``parents`` kept as a key).

    >>> edit_dag({"A": [], "B": ["A"], "C": ["A", "B"]}, reverse=[("B", "C")], hide=["A"])
    {'A': [], 'B': ['C'], 'C': []}
    """
    out = {c: list(ps) for c, ps in parents.items()}
    for p in {p for ps in parents.values() for p in ps} - set(out):
        out[p] = []
    for kind, edges in (("drop", drop), ("reverse", reverse)):
        for e in edges:
            if isinstance(e, str) or len(e) != 2:
                raise ValueError(f"edit_dag: {kind} takes (parent, child) pairs, got {e!r}")
            p, c = e
            if p not in out.get(c, ()):
                raise ValueError(f"edit_dag: cannot {kind} the edge {p} -> {c}: it is not in the DAG")
            out[c].remove(p)
            if kind == "reverse":
                out[p].append(c)
    unknown = [h for h in hide if h not in out]
    if unknown:
        raise ValueError(f"edit_dag: cannot hide unknown columns {unknown}; the columns are {list(out)}")
    for h in hide:
        out[h] = []
        for c in out:
            if h in out[c]:
                out[c].remove(h)
    try:
        _topological(list(out), out)
    except ValueError as err:
        after = f" after reversing {[tuple(e) for e in reverse]}" if reverse else ""
        raise ValueError(f"edit_dag: the edited graph is not a DAG{after}: {err}") from None
    return out


def _topological(columns: Sequence[str], parents: Mapping[str, Sequence[str]]) -> list[str]:
    order, state = [], {}

    def visit(c, path):
        if state.get(c) == 2:
            return
        if state.get(c) == 1:
            raise ValueError(f"the DAG has a cycle through {' -> '.join([*path, c])}")
        state[c] = 1
        for p in parents.get(c, ()):
            visit(p, [*path, c])
        state[c] = 2
        order.append(c)

    for c in columns:
        visit(c, [])
    return order


def _mlp_init(key, n_in, hidden):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (n_in, hidden)) / np.sqrt(max(n_in, 1)), "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden,)) / np.sqrt(hidden), "b2": jnp.zeros(())}


def _mlp(p, z):
    return jnp.tanh(z @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


@dataclasses.dataclass(frozen=True)
class SCM:
    """A fitted additive-noise SCM. Build with :meth:`fit`; query with :meth:`counterfactual`."""

    columns: tuple[str, ...]
    parents: dict  # column -> tuple of parent columns
    equations: dict  # column -> ("linear", {"w", "b"}) | ("mlp", {params, "mu", "sd"}) ; roots absent
    codes: dict  # column -> sorted array of allowed codes (categorical columns)
    order: tuple[str, ...]

    @staticmethod
    def fit(x, columns: Sequence[str], parents: Mapping[str, Sequence[str]], *, categorical: Sequence[str] = (),
            equations: str = "linear", key=None, hidden: int = 16, steps: int = 500) -> "SCM":
        """Fits one structural equation per non-root column from data ``x`` ``[N, len(columns)]``."""
        x = np.asarray(x, np.float64)
        columns = tuple(columns)
        if x.ndim != 2 or x.shape[1] != len(columns):
            raise ValueError(f"data of shape {x.shape} does not match {len(columns)} columns")
        unknown = sorted({p for ps in parents.values() for p in ps} - set(columns)) + sorted(set(parents) - set(columns))
        if unknown:
            raise ValueError(f"the DAG names unknown columns {unknown}; the columns are {list(columns)}")
        if equations not in ("linear", "mlp"):
            raise ValueError(f"equations must be 'linear' or 'mlp', got {equations!r}")
        order = tuple(_topological(columns, parents))
        idx = {c: i for i, c in enumerate(columns)}
        key = jax.random.key(0) if key is None else key
        eqs = {}
        for c in columns:
            ps = tuple(parents.get(c, ()))
            if not ps:
                continue
            z, t = x[:, [idx[p] for p in ps]], x[:, idx[c]]
            if equations == "linear":
                a = np.concatenate([z, np.ones((len(z), 1))], axis=1)
                coef, *_ = np.linalg.lstsq(a, t, rcond=None)
                eqs[c] = ("linear", {"w": coef[:-1], "b": coef[-1]})
            else:
                mu, sd = z.mean(0), z.std(0) + 1e-8
                tm, ts = t.mean(), t.std() + 1e-8
                zn, tn = jnp.asarray((z - mu) / sd, jnp.float32), jnp.asarray((t - tm) / ts, jnp.float32)
                key, k = jax.random.split(key)
                p = _mlp_init(k, len(ps), hidden)
                opt = optax.adam(1e-2)

                @jax.jit
                def train(p, zn=zn, tn=tn):
                    def step(carry, _):
                        p, s = carry
                        loss, g = jax.value_and_grad(lambda q: jnp.mean((_mlp(q, zn) - tn) ** 2))(p)
                        u, s = opt.update(g, s, p)
                        return (optax.apply_updates(p, u), s), loss

                    return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

                eqs[c] = ("mlp", {"net": jax.device_get(train(p)), "mu": mu, "sd": sd, "tm": tm, "ts": ts})
        codes = {c: np.unique(x[:, idx[c]]) for c in categorical}
        return SCM(columns, {c: tuple(parents.get(c, ())) for c in columns}, eqs, codes, order)

    def _predict(self, c: str, z):
        kind, p = self.equations[c]
        if kind == "linear":
            return z @ jnp.asarray(p["w"], z.dtype) + p["b"]
        zn = (z - jnp.asarray(p["mu"], z.dtype)) / jnp.asarray(p["sd"], z.dtype)
        return _mlp(p["net"], zn.astype(jnp.float32)).astype(z.dtype) * p["ts"] + p["tm"]

    def abduct(self, x) -> jax.Array:
        """The noise ``u`` of every column (``u_v = x_v`` for roots)."""
        x = jnp.asarray(x)
        idx = {c: i for i, c in enumerate(self.columns)}
        u = x
        for c in self.equations:
            z = x[:, [idx[p] for p in self.parents[c]]]
            u = u.at[:, idx[c]].set(x[:, idx[c]] - self._predict(c, z))
        return u

    def descendants(self, columns: Sequence[str]) -> set[str]:
        out, frontier = set(), set(columns)
        while frontier:
            nxt = {c for c, ps in self.parents.items() if set(ps) & frontier} - out
            out |= nxt
            frontier = nxt
        return out - set(columns)

    def counterfactual(self, x, do: Mapping[str, float], *, snap: bool = True) -> jax.Array:
        """``x`` had ``do`` held: abduction → action → prediction. ``do`` values may be scalars or
        per-row arrays. Categorical columns are snapped to their observed codes when ``snap``."""
        x = jnp.asarray(x)
        idx = {c: i for i, c in enumerate(self.columns)}
        unknown = [c for c in do if c not in idx]
        if unknown:
            raise ValueError(f"unknown intervened columns {unknown}; the columns are {list(self.columns)}")
        u = self.abduct(x)
        out = x
        for c, v in do.items():
            out = out.at[:, idx[c]].set(jnp.broadcast_to(jnp.asarray(v, x.dtype), (x.shape[0],)))
        desc = self.descendants(list(do))
        for c in self.order:
            if c not in desc or c in do:
                continue
            z = out[:, [idx[p] for p in self.parents[c]]]
            val = self._predict(c, z) + u[:, idx[c]]
            if snap and c in self.codes:
                codes = jnp.asarray(self.codes[c], x.dtype)
                val = codes[jnp.argmin(jnp.abs(val[:, None] - codes[None, :]), axis=1)]
            out = out.at[:, idx[c]].set(val)
        return out

    def to_json(self) -> dict:
        return {
            "columns": list(self.columns),
            "parents": {c: list(p) for c, p in self.parents.items()},
            "equations": {c: k for c, (k, _) in self.equations.items()},
            "categorical": sorted(self.codes),
        }


def fit_default(dataset, *, equations: str = "linear", split: str = "train", key=None) -> SCM:
    """The default-DAG SCM of a bundled dataset, fitted on one of its splits."""
    return SCM.fit(dataset.splits[split].x, dataset.columns, default_dag(dataset), categorical=list(dataset.categories),
                   equations=equations, key=key)


def counterfactual_fairness(model, scm: SCM, x, attribute: str, values, *, decide: str = "argmax",
                            per_example: bool = False) -> dict:
    """Share of inputs whose predicted class changes under the SCM counterfactual "had ``attribute``
    been v'" (any other value v' in ``values``), next to the plain attribute flip (descendants kept).
    With ``per_example`` the result also holds the boolean arrays ``counterfactual_changed`` and
    ``flip_changed`` ``[N]`` (for paired comparisons of models or SCMs on the same rows)."""
    from jaxrepair.models import functional

    apply, params = functional(model)
    x = jnp.asarray(x, jnp.float32)
    col = list(scm.columns).index(attribute)
    pick = jnp.argmax if decide == "argmax" else jnp.argmin
    y0 = pick(apply(params, x), axis=-1)
    cf_changed = jnp.zeros(x.shape[0], bool)
    flip_changed = jnp.zeros(x.shape[0], bool)
    for v in values:
        other = x[:, col] != v
        xcf = scm.counterfactual(x, {attribute: v})
        xfl = x.at[:, col].set(v)
        cf_changed |= other & (pick(apply(params, xcf), axis=-1) != y0)
        flip_changed |= other & (pick(apply(params, xfl), axis=-1) != y0)
    out = {"counterfactual_violation": float(jnp.mean(cf_changed)), "flip_violation": float(jnp.mean(flip_changed)),
           "num_samples": int(x.shape[0]), "attribute": attribute, "values": [float(v) for v in values]}
    if per_example:
        out["counterfactual_changed"], out["flip_changed"] = np.asarray(cf_changed), np.asarray(flip_changed)
    return out


__all__ = ["SCM", "counterfactual_fairness", "default_dag", "edit_dag", "fit_default"]
