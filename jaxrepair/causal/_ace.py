"""Average causal effect (ACE) of hidden neurons — CARE's fault localisation.

For every unit ``j`` of a site and every ``α`` on a grid of ``num_values`` points spanning the
unit's observed ``[min, max]`` on the data, ACE computes ``E_x[effect | do(h_j = α)]``
(Sun et al., "Causality-based neural network repair", ICSE 2022; baseline-subtracted ACE after
Chattopadhyay et al., "Neural network attributions: a causal perspective", ICML 2019).

Per site this is *one* compiled program: a scan over sample chunks that evaluates the network once
per chunk (all sites kept), then maps over (unit, α) pairs in vmapped chunks of ``chunk_size``,
re-evaluating only what lies downstream of the site. When the site feeds a dense layer through
element-wise activations only, a single-unit ``do`` changes that layer's pre-activation by the
rank-1 term ``(act(α) − act(h_j)) · W[j, :]``, so the intervened evaluation skips that matmul.

Scores per unit (all ranked high → first):

* ``care_mean`` — mean over α of the effect (CARE's fairness score);
* ``care_spread`` — max − min over α of the effect (CARE's backdoor/safety score on ``E[y_target]``);
* ``interventional_change`` — ``|mean_α E[effect | do(h=α)] − E[effect]|``: how far the property moves
  when the unit's natural variation is cut. A unit that alone carries a sensitive attribute
  gets a *low* ``care_mean`` (fixing it removes the unfairness) but the *highest*
  interventional change; a unit with no path to the output gets exactly 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from typing import Mapping, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrepair.causal import _effects
from jaxrepair.interventions import Intervention
from jaxrepair.models import ELEMENTWISE, Apply, Graph, Network, check_finite, descendants, functional, hidden_sites
from jaxrepair.models import resume, run, sites as list_sites

SCORES = ("interventional_change", "care_mean", "care_spread")
DEFAULT_SCORE = "interventional_change"

#: Incremented each time a site program is traced (compiled); tests assert it stays put.
TRACE_COUNT = {"site_program": 0}


class Neuron(NamedTuple):
    site: str
    unit: int
    score: float


class Localizer(Protocol):
    """A localisation result repair can draw neurons from (:class:`Localization`, ``Interchange``)."""

    def ranking(self, score: str) -> list[Neuron]: ...

    def top(self, k: int, score: str) -> list[Neuron]: ...


@dataclasses.dataclass
class SiteACE:
    """ACE of every localised unit of one site. Arrays are numpy, ``[units]`` or ``[units, values]``."""

    site: str
    units: np.ndarray  # [U]
    low: np.ndarray  # [U] observed min
    high: np.ndarray  # [U] observed max
    alphas: np.ndarray  # [U, V]
    curve: np.ndarray  # [U, V]  E[effect | do(h_j = α_v)]
    per_channel: bool

    @property
    def ace(self) -> np.ndarray:
        """Baseline-subtracted ACE: ``curve − mean over α`` (Chattopadhyay et al. 2019)."""
        return self.curve - self.curve.mean(axis=1, keepdims=True)

    def scores(self, baseline: float) -> dict[str, np.ndarray]:
        return {
            "interventional_change": np.abs(self.curve.mean(axis=1) - baseline),
            "care_mean": self.curve.mean(axis=1),
            "care_spread": self.curve.max(axis=1) - self.curve.min(axis=1),
        }


@dataclasses.dataclass
class Localization:
    """The result of :func:`ace`: per-site curves, scores and rankings."""

    sites: dict[str, SiteACE]
    baseline: float  # E[effect] without intervention
    effect: str
    num_values: int
    num_samples: int
    timings: dict[str, float]

    def scores(self, score: str = DEFAULT_SCORE) -> dict[str, np.ndarray]:
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
        return {s: r.scores(self.baseline)[score] for s, r in self.sites.items()}

    def ranking(self, score: str = DEFAULT_SCORE) -> list[Neuron]:
        """All localised units of all sites, highest score first (ties: site order, then unit)."""
        rows = [
            Neuron(s, int(u), float(v))
            for s, vals in self.scores(score).items()
            for u, v in zip(self.sites[s].units, vals)
        ]
        order = sorted(range(len(rows)), key=lambda i: -rows[i].score)  # stable for ties
        return [rows[i] for i in order]

    def top(self, k: int, score: str = DEFAULT_SCORE) -> list[Neuron]:
        return self.ranking(score)[:k]

    def to_json(self, *, top_k: int = 20) -> dict:
        return {
            "effect": self.effect,
            "baseline_effect": self.baseline,
            "num_values": self.num_values,
            "num_samples": self.num_samples,
            "timings_s": self.timings,
            "top": {s: [n._asdict() for n in self.top(top_k, s)] for s in SCORES},
            "sites": {
                name: {
                    "units": r.units.tolist(),
                    "per_channel": r.per_channel,
                    "low": r.low.tolist(),
                    "high": r.high.tolist(),
                    "curve": r.curve.tolist(),
                    "scores": {k: v.tolist() for k, v in r.scores(self.baseline).items()},
                }
                for name, r in self.sites.items()
            },
        }


# --------------------------------------------------------------------------- planning


def _rank1_plan(graph: Graph, site: str, per_channel: bool, shape) -> tuple[tuple, str] | None:
    """``(elementwise chain, dense node)`` when a single-unit do on ``site`` is a rank-1 update."""
    if per_channel or len(shape) != 1 or site == graph.output:
        return None
    chain, cur = [], site
    while True:
        cons = graph.consumers(cur)
        if len(cons) != 1 or cur == graph.output:
            return None
        c = cons[0]
        if c.op in ELEMENTWISE and len(c.inputs) == 1:
            chain.append(c)
            cur = c.name
        elif c.op == "dense" and c.inputs == (cur,):
            return tuple(chain), c.name
        else:
            return None


def auto_chunk_size(graph: Graph, info: Mapping, site: str, rows: int, pairs: int, memory_budget: float) -> int:
    """(unit, α) pairs in flight so that ``rows`` rows of everything downstream of ``site`` fit the budget."""
    downstream = sum(info[d].num_units for d in descendants(graph, frozenset({site}))) + 1
    return int(max(1, min(pairs, memory_budget // (rows * downstream * 4 * 3))))


def _units_view(h: jax.Array, per_channel: bool) -> jax.Array:
    """``[rows, units]``: per-unit samples (spatial positions count as samples per channel)."""
    return h.reshape(-1, h.shape[-1]) if per_channel else h.reshape(h.shape[0], -1)


# --------------------------------------------------------------------------- the compiled program


def _site_body(params, batches, weights, units, *, graph, site, effect, num_values, chunk_size, per_channel, plan,
               data_axis=None):
    """One site's whole localisation. ``batches`` leaves are ``[chunks, batch, ...]``. Inside
    ``shard_map`` with ``data_axis`` set, the data chunks are this device's share: ranges and sums
    are combined across that axis with collectives."""
    TRACE_COUNT["site_program"] += 1
    structured = _effects.is_structured(effect)

    # Pass 1: observed range of every unit on the data.
    def range_step(carry, inp):
        b, w = inp
        h = run(graph, params, b["x"], all_sites=True)[site]
        hv = _units_view(h, per_channel)
        valid = jnp.broadcast_to(w.reshape(w.shape[0], *([1] * (h.ndim - 1))) > 0, h.shape)
        valid = _units_view(valid, per_channel)
        lo = jnp.minimum(carry[0], jnp.min(jnp.where(valid, hv, jnp.inf), axis=0))
        hi = jnp.maximum(carry[1], jnp.max(jnp.where(valid, hv, -jnp.inf), axis=0))
        return (lo, hi), None

    site_shape = run(graph, params, batches["x"][0, :1], all_sites=True)[site].shape[1:]
    n_all = site_shape[-1] if per_channel else math.prod(site_shape)
    init = (jnp.full(n_all, jnp.inf), jnp.full(n_all, -jnp.inf))
    (lo, hi), _ = lax.scan(range_step, init, (batches, weights))
    if data_axis is not None:
        lo, hi = lax.pmin(lo, data_axis), lax.pmax(hi, data_axis)
    lo, hi = lo[units], hi[units]
    grid = jnp.linspace(0.0, 1.0, num_values)
    alphas = lo[:, None] + (hi - lo)[:, None] * grid[None, :]  # [U, V]
    flat_j = jnp.repeat(units, num_values)  # [U·V]
    flat_a = alphas.reshape(-1)

    def mask_for(j):
        if per_channel:
            return (jnp.arange(site_shape[-1]) == j).reshape((1,) * (len(site_shape) - 1) + (-1,))
        return (jnp.arange(math.prod(site_shape)) == j).reshape(site_shape)

    # Pass 2: E[effect | do(h_j = α)] for every pair, summed over sample chunks.
    def ace_step(carry, inp):
        b, w = inp
        if structured:
            xs = effect.inputs(b)
            env = run(graph, params, xs, all_sites=True)
            base = effect.reduce(env[graph.output], b)

            def one(j, a):
                if plan is not None:
                    chain, dense = plan
                    m = env[site].shape[0]
                    new, old = a, env[site].reshape(m, -1)[:, j]
                    for node in chain:
                        new = ELEMENTWISE[node.op](new, node.attr)
                        old = env[node.name].reshape(m, -1)[:, j]
                    row = params[dense]["kernel"][j]  # [out]
                    out = resume(graph, params, env, overrides={dense: env[dense] + (new - old)[:, None] * row})
                else:
                    iv = {site: Intervention(mask_for(j), jnp.zeros(()), a)}
                    out = resume(graph, params, env, iv)
                return jnp.sum(w * effect.reduce(out, b))

        else:
            base = effect(lambda xx: run(graph, params, xx), b)

            def one(j, a):
                iv = {site: Intervention(mask_for(j), jnp.zeros(()), a)}
                return jnp.sum(w * effect(lambda xx: run(graph, params, xx, iv), b))

        sums = lax.map(lambda ja: one(*ja), (flat_j, flat_a), batch_size=chunk_size)
        return (carry[0] + sums, carry[1] + jnp.sum(w * base)), None

    (sums, base_sum), _ = lax.scan(ace_step, (jnp.zeros(flat_j.shape[0]), jnp.zeros(())), (batches, weights))
    total = jnp.sum(weights)
    if data_axis is not None:
        sums, base_sum, total = lax.psum(sums, data_axis), lax.psum(base_sum, data_axis), lax.psum(total, data_axis)
    return lo, hi, alphas, (sums / total).reshape(-1, num_values), base_sum / total


_STATIC = ("graph", "site", "effect", "num_values", "chunk_size", "per_channel", "plan")
_site_program = jax.jit(_site_body, static_argnames=_STATIC)


@functools.lru_cache(maxsize=None)
def _sharded_program(mesh, **kw):
    """``_site_body`` under ``shard_map``: units split over the mesh's ``units`` axis, data chunks over
    its ``data`` axis; params and the rest replicated."""
    from jax.sharding import PartitionSpec as P

    def body(params, batches, weights, units):
        lo, hi, alphas, curve, base = _site_body(params, batches, weights, units, data_axis="data", **kw)
        return lo, hi, alphas, curve, base[None]

    f = jax.shard_map(body, mesh=mesh, in_specs=(P(), P("data"), P("data"), P("units")),
                      out_specs=(P("units"), P("units"), P("units"), P("units"), P("units")), check_vma=False)
    return jax.jit(f)


# --------------------------------------------------------------------------- validation and driver


def _resolve_model(model, params):
    if isinstance(model, Network):
        apply, p = functional(model)
        return apply, (p if params is None else params)
    if isinstance(model, Apply):
        if params is None:
            raise ValueError("ace(apply, ...) needs params=")
        return model, params
    raise TypeError(f"model must be a jaxrepair Network or Apply, got {type(model).__name__}")


def _as_batch(data) -> dict:
    if isinstance(data, Mapping):
        if "x" not in data:
            raise ValueError(f"the data batch needs an 'x' entry; it has {sorted(data)}")
        return {k: jnp.asarray(v) for k, v in data.items()}
    return {"x": jnp.asarray(data)}


def _chunked(batch: dict, batch_size: int):
    """Pads the batch to a multiple of ``batch_size`` (repeating row 0, weight 0) and reshapes."""
    n = batch["x"].shape[0]
    chunks = -(-n // batch_size)
    pad = chunks * batch_size - n

    def reshape(a):
        a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
        return a.reshape(chunks, batch_size, *a.shape[1:])

    weights = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)]).reshape(chunks, batch_size)
    return jax.tree.map(reshape, batch), weights


def _check_effect(graph, params, effect, chunk: dict) -> None:
    b = chunk["x"].shape[0]
    if _effects.is_structured(effect):
        fn = lambda c: effect.reduce(run(graph, params, effect.inputs(c)), c)  # noqa: E731
    elif callable(effect):
        fn = lambda c: effect(lambda xx: run(graph, params, xx), c)  # noqa: E731
    else:
        raise TypeError(f"effect must be an Effect (inputs/reduce) or a callable, got {type(effect).__name__}")
    try:
        out = jax.eval_shape(fn, chunk)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"effect {_effects.describe(effect)} failed on a batch of {b} examples: {e}") from e
    if not hasattr(out, "shape") or tuple(out.shape) != (b,):
        raise ValueError(
            f"effect {_effects.describe(effect)} must return one number per example, shape ({b},); "
            f"it returned {getattr(out, 'shape', type(out).__name__)}"
        )


def ace(
    model: Network | Apply,
    data,
    effect,
    *,
    params=None,
    sites: Sequence[str] | None = None,
    units: Mapping[str, Sequence[int]] | None = None,
    num_values: int = 16,
    per_channel: bool | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: float = 512e6,
    devices=None,
    data_parallel: int = 1,
    progress: bool = False,
) -> Localization:
    """Computes the ACE of every unit of ``sites`` on ``effect`` and ranks them.

    Args:
      model: a :class:`~jaxrepair.Network` (or an ``Apply`` with ``params=``).
      data: a batch dict with ``x`` (plus whatever the effect reads, e.g. ``x_cf``) or an array.
      effect: :class:`TargetOutput`, :class:`Fairness`, :class:`CounterfactualPair`, any object with
        ``inputs``/``reduce``, or a callable ``effect(apply_fn, batch) -> [B]``.
      sites: site names (default: every hidden post-activation site).
      units: optional subset of units per site (default: all).
      num_values: α grid points per unit (CARE's default 16).
      per_channel: intervene per channel (default: for rank-3 sites, i.e. conv feature maps).
      batch_size: samples per chunk of the scan over data (bounds memory; default ≤ 1024).
      chunk_size: (unit, α) pairs evaluated at once (default: what fits ``memory_budget`` bytes).
      devices: devices to shard over (``None``: all devices of all processes; an int: the first n;
        1: the single-device program). Units are split over the mesh axis ``units``.
      data_parallel: size of the mesh axis ``data`` that splits the data chunks (the rest of the
        devices split units); ranges and sums are combined with ``pmin``/``pmax``/``psum``.
      progress: print one line per site to stderr.

    Returns:
      A :class:`Localization`.
    """
    apply, params = _resolve_model(model, params)
    graph = apply.graph
    batch = _as_batch(data)
    info = list_sites(graph, params)
    sites = list(sites) if sites is not None else hidden_sites(graph, params)
    unknown = [s for s in sites if s not in info]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; the model's sites are {list(info)}")
    if num_values < 2:
        raise ValueError(f"num_values must be at least 2, got {num_values}")
    x = batch["x"]
    if tuple(x.shape[1:]) != tuple(graph.input_shape):
        raise ValueError(f"data x has per-example shape {tuple(x.shape[1:])}, the model expects {graph.input_shape}")
    check_finite(batch, "data")
    check_finite(params, "params")
    n = int(x.shape[0])
    batch_size = int(min(n, batch_size or 1024))
    chunks, weights = _chunked(batch, batch_size)
    _check_effect(graph, params, effect, jax.tree.map(lambda a: a[0], chunks))

    plans, unit_sets = {}, {}
    for s in sites:
        shape = info[s].shape
        pc = (len(shape) == 3) if per_channel is None else per_channel
        n_units = shape[-1] if pc else math.prod(shape)
        u = np.arange(n_units) if units is None or s not in units else np.asarray(units[s], np.int64)
        if u.size == 0 or u.min() < 0 or u.max() >= n_units:
            raise IndexError(f"site {s!r} has {n_units} units; requested unit indices {u.tolist()} are out of range")
        unit_sets[s] = (u, pc)
        plans[s] = _rank1_plan(graph, s, pc, shape)

    groups = int(jax.eval_shape(effect.inputs, jax.tree.map(lambda a: a[0], chunks)).shape[0]) if _effects.is_structured(effect) else batch_size
    from jaxrepair import distributed

    devs = distributed.devices(devices)
    if data_parallel < 1 or len(devs) % data_parallel:
        raise ValueError(f"data_parallel={data_parallel} does not divide the {len(devs)} devices")
    mesh = distributed.make_mesh({"units": -1, "data": data_parallel}, devs) if len(devs) > 1 else None
    if mesh is not None:
        n_units_axis = mesh.shape["units"]
        n_chunks = int(weights.shape[0])
        pad = (-n_chunks) % data_parallel
        host_chunks = jax.tree.map(lambda a: distributed.pad_to(np.asarray(a), data_parallel), chunks)
        host_weights = np.concatenate([np.asarray(weights), np.zeros((pad, weights.shape[1]), np.float32)]) if pad else np.asarray(weights)
        from jax.sharding import PartitionSpec as P

        g_params = distributed.put_tree(params, mesh)
        g_chunks = distributed.put_tree(host_chunks, mesh, P("data"))
        g_weights = distributed.put(host_weights, mesh, P("data"))
    results, timings = {}, {}
    baseline = None
    for i, s in enumerate(sites):
        u, pc = unit_sets[s]
        local_units = len(u) if mesh is None else -(-len(u) // n_units_axis)
        cs = chunk_size or auto_chunk_size(graph, info, s, groups, local_units * num_values, memory_budget)
        kw = dict(graph=graph, site=s, effect=effect, num_values=num_values, chunk_size=cs, per_channel=pc, plan=plans[s])
        t0 = time.perf_counter()
        if mesh is None:
            args = (params, chunks, weights, jnp.asarray(u, jnp.int32))
            compiled = _site_program.lower(*args, **kw).compile() if progress else None
            t1 = time.perf_counter()
            out = (compiled(*args) if compiled is not None else _site_program(*args, **kw))
            lo, hi, alphas, curve, base = jax.device_get(out)
        else:
            prog = _sharded_program(mesh, **kw)
            g_units = distributed.put(distributed.pad_to(np.asarray(u, np.int32), n_units_axis), mesh, P("units"))
            t1 = time.perf_counter()
            lo, hi, alphas, curve, base = (distributed.gather(o) for o in prog(g_params, g_chunks, g_weights, g_units))
            lo, hi, alphas, curve, base = lo[: len(u)], hi[: len(u)], alphas[: len(u)], curve[: len(u)], base[0]
        t2 = time.perf_counter()
        timings[s] = t2 - t0
        baseline = float(base)
        results[s] = SiteACE(s, u, np.asarray(lo), np.asarray(hi), np.asarray(alphas), np.asarray(curve), pc)
        if progress:
            print(
                f"[ace {i + 1}/{len(sites)}] {s}: {len(u)} units x {num_values} values x {n} samples"
                f" ({'rank-1' if plans[s] else 'generic'} path) compile {t1 - t0:.2f}s run {t2 - t1:.2f}s",
                file=sys.stderr,
                flush=True,
            )
    return Localization(results, baseline if baseline is not None else float("nan"), _effects.describe(effect), num_values, n, timings)
