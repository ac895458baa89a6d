"""Average causal effect (ACE) of hidden neurons — CARE's fault localisation.

For every unit ``j`` of a site and every ``α`` on a grid of ``num_values`` points spanning the
unit's observed ``[min, max]`` on the data, ACE computes ``E_x[effect | do(h_j = α)]``
(Sun et al., "Causality-based neural network repair", ICSE 2022; baseline-subtracted ACE after
Chattopadhyay et al., "Neural network attributions: a causal perspective", ICML 2019).

All sites are *one* compiled program: a scan over sample chunks that evaluates the network once
per chunk (all sites kept, shared by every site), then maps over each site's (unit, α) pairs in
vmapped chunks of ``chunk_size``, re-evaluating only what lies downstream of the site. When the site feeds a dense layer through
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
from jaxrepair.models import ELEMENTWISE, Apply, Graph, Network, channel_units, check_finite, descendants, functional, hidden_sites
from jaxrepair.models import resume, run, sites as list_sites

SCORES = ("interventional_change", "care_mean", "care_spread")
DEFAULT_SCORE = "interventional_change"

#: Incremented each time a site program is traced (compiled); tests assert it stays put.
TRACE_COUNT = {"program": 0}


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
    """``(elementwise chain, dense node)`` when a single-unit do on ``site`` is a rank-1 update: a flat
    site, or a token site ``[tokens, units]`` intervened per channel (the dense layer reads each token's
    row), followed by element-wise nodes and one dense layer."""
    if site == graph.output or not ((len(shape) == 1 and not per_channel) or (len(shape) == 2 and per_channel)):
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


class SitePlan(NamedTuple):
    """How one site is localised (static): per-channel or per-unit, the rank-1 shortcut, pairs in flight."""

    site: str
    per_channel: bool
    plan: tuple | None  # (element-wise chain, dense node) when a single-unit do is a rank-1 update
    chunk_size: int


def _mask_for(sp: SitePlan, shape, j) -> jax.Array:
    """The boolean mask of unit (or channel) ``j`` of a site of per-example ``shape``."""
    if sp.per_channel:
        return (jnp.arange(shape[-1]) == j).reshape((1,) * (len(shape) - 1) + (-1,))
    return (jnp.arange(math.prod(shape)) == j).reshape(shape)


def do_effect(graph: Graph, params, effect, sp: SitePlan, shape, env, b, j, a) -> jax.Array:
    """``effect`` per example of batch ``b`` under ``do(h_j = a)`` at site ``sp`` ([rows]). ``env`` is
    the un-intervened evaluation of ``effect.inputs(b)`` (all sites) for a structured effect, else
    None; only what lies downstream of the site is re-evaluated, and a rank-1 site skips its
    consumer's matmul. ``a`` is a scalar (or broadcasts against the site's rows)."""
    if env is None:
        iv = {sp.site: Intervention(_mask_for(sp, shape, j), jnp.zeros(()), a)}
        return effect(lambda xx: run(graph, params, xx, iv), b)
    if sp.plan is not None:
        chain, dense = sp.plan
        m = env[sp.site].shape[0]

        def unit(v):  # unit j's values: [rows], or [rows, tokens] per channel
            return v[..., j] if sp.per_channel else v.reshape(m, -1)[:, j]

        new, old = a, unit(env[sp.site])
        for node in chain:
            new = ELEMENTWISE[node.op](new, node.attr)
            old = unit(env[node.name])
        row = params[dense]["kernel"][j]  # [out]
        out = resume(graph, params, env, overrides={dense: env[dense] + (new - old)[..., None] * row})
    else:
        out = resume(graph, params, env, {sp.site: Intervention(_mask_for(sp, shape, j), jnp.zeros(()), a)})
    return effect.reduce(out, b)


def site_shapes(graph: Graph, params, x_row) -> dict:
    """Per-example shape of every site, from one example (abstract evaluation, nothing runs)."""
    return {k: v.shape[1:] for k, v in jax.eval_shape(lambda p, x: run(graph, p, x, all_sites=True), params, x_row).items()}


def site_ranges(graph: Graph, params, batches, weights, sites: Sequence[SitePlan], shapes) -> tuple:
    """Pass 1: observed ``(min, max)`` of every unit of every site over the rows of weight > 0
    (``batches`` leaves ``[chunks, batch, ...]``), one scan over the chunks."""

    def range_step(carry, inp):
        b, w = inp
        env = run(graph, params, b["x"], all_sites=True)
        out = []
        for sp, (lo, hi) in zip(sites, carry):
            h = env[sp.site]
            hv = _units_view(h, sp.per_channel)
            valid = _units_view(jnp.broadcast_to(w.reshape(w.shape[0], *([1] * (h.ndim - 1))) > 0, h.shape), sp.per_channel)
            out.append((jnp.minimum(lo, jnp.min(jnp.where(valid, hv, jnp.inf), axis=0)),
                        jnp.maximum(hi, jnp.max(jnp.where(valid, hv, -jnp.inf), axis=0))))
        return tuple(out), None

    def width(sp):
        shape = shapes[sp.site]
        return shape[-1] if sp.per_channel else math.prod(shape)

    init = tuple((jnp.full(width(sp), jnp.inf), jnp.full(width(sp), -jnp.inf)) for sp in sites)
    return lax.scan(range_step, init, (batches, weights))[0]


def _program_body(params, batches, weights, units, *, graph, sites, effect, num_values, data_axis=None):
    """Every site's whole localisation in one program. ``batches`` leaves are ``[chunks, batch, ...]``;
    ``units[i]`` are the units of ``sites[i]``. Each sample chunk is evaluated once (all sites kept)
    and shared by every site. Inside ``shard_map`` with ``data_axis`` set, the data chunks are this
    device's share: ranges and sums are combined across that axis with collectives."""
    TRACE_COUNT["program"] += 1
    structured = _effects.is_structured(effect)
    shapes = site_shapes(graph, params, batches["x"][0, :1])

    ranges = site_ranges(graph, params, batches, weights, sites, shapes)
    grid = jnp.linspace(0.0, 1.0, num_values)
    per_site = []
    for sp, (lo, hi), u in zip(sites, ranges, units):
        if data_axis is not None:
            lo, hi = lax.pmin(lo, data_axis), lax.pmax(hi, data_axis)
        lo, hi = lo[u], hi[u]
        alphas = lo[:, None] + (hi - lo)[:, None] * grid[None, :]  # [U, V]
        per_site.append((lo, hi, alphas, jnp.repeat(u, num_values), alphas.reshape(-1)))  # pairs [U·V]

    # Pass 2: E[effect | do(h_j = α)] for every pair of every site, summed over sample chunks.
    def ace_step(carry, inp):
        b, w = inp
        env = run(graph, params, effect.inputs(b), all_sites=True) if structured else None
        base = effect.reduce(env[graph.output], b) if structured else effect(lambda xx: run(graph, params, xx), b)

        def one(sp, j, a):
            return jnp.sum(w * do_effect(graph, params, effect, sp, shapes[sp.site], env, b, j, a))

        sums = tuple(c + lax.map(lambda ja, sp=sp: one(sp, *ja), (flat_j, flat_a), batch_size=sp.chunk_size)
                     for sp, c, (_, _, _, flat_j, flat_a) in zip(sites, carry[0], per_site))
        return (sums, carry[1] + jnp.sum(w * base)), None

    init = (tuple(jnp.zeros(ps[3].shape[0]) for ps in per_site), jnp.zeros(()))
    (sums, base_sum), _ = lax.scan(ace_step, init, (batches, weights))
    total = jnp.sum(weights)
    if data_axis is not None:
        sums = tuple(lax.psum(x, data_axis) for x in sums)
        base_sum, total = lax.psum(base_sum, data_axis), lax.psum(total, data_axis)
    curves = tuple((x / total).reshape(-1, num_values) for x in sums)
    return tuple((lo, hi, alphas, c) for (lo, hi, alphas, _, _), c in zip(per_site, curves)), base_sum / total


_STATIC = ("graph", "sites", "effect", "num_values")
_program = jax.jit(_program_body, static_argnames=_STATIC)


@functools.lru_cache(maxsize=None)
def _sharded_program(mesh, **kw):
    """``_program_body`` under ``shard_map``: every site's units split over the mesh's ``units`` axis,
    data chunks over its ``data`` axis; params and the rest replicated."""
    from jax.sharding import PartitionSpec as P

    n_sites = len(kw["sites"])

    def body(params, batches, weights, units):
        out, base = _program_body(params, batches, weights, units, data_axis="data", **kw)
        return out, base[None]

    site_spec = (P("units"),) * 4
    f = jax.shard_map(body, mesh=mesh, in_specs=(P(), P("data"), P("data"), (P("units"),) * n_sites),
                      out_specs=((site_spec,) * n_sites, P("units")), check_vma=False)
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
    logits = jax.eval_shape(lambda c: run(graph, params, c["x"]), chunk)
    _effects.check_against(effect, tuple(graph.input_shape), int(logits.shape[-1]))
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


class Prepared(NamedTuple):
    """A checked localisation request: the model's graph and params, the sites and their units
    (``unit_sets[site] = (units, per_channel)``), rank-1 plans, and the data in padded chunks."""

    graph: Graph
    params: object
    info: dict
    sites: list
    unit_sets: dict
    plans: dict
    batch: dict  # leaves [rows, ...]
    chunks: dict  # leaves [chunks, batch_size, ...]
    weights: jax.Array  # [chunks, batch_size], 0 on padding
    rows: int
    batch_size: int


def prepare(model, data, effect, *, params=None, sites=None, units=None, num_values: int = 16, per_channel=None,
            batch_size=None) -> Prepared:
    """Checks a localisation request (model, data, effect, sites, units) before any work starts."""
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
        pc = channel_units(shape) if per_channel is None else per_channel
        n_units = shape[-1] if pc else math.prod(shape)
        u = np.arange(n_units) if units is None or s not in units else np.asarray(units[s], np.int64)
        if u.size == 0 or u.min() < 0 or u.max() >= n_units:
            raise IndexError(f"site {s!r} has {n_units} units; requested unit indices {u.tolist()} are out of range")
        unit_sets[s] = (u, pc)
        plans[s] = _rank1_plan(graph, s, pc, shape)

    return Prepared(graph, params, info, sites, unit_sets, plans, batch, chunks, weights, n, batch_size)


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
      per_channel: intervene per channel (default: sites of more than one axis — conv feature maps,
        token sequences, attention heads; see :func:`jaxrepair.models.channel_units`).
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
    prep = prepare(model, data, effect, params=params, sites=sites, units=units, num_values=num_values,
                   per_channel=per_channel, batch_size=batch_size)
    graph, params, info, sites, unit_sets, plans = prep.graph, prep.params, prep.info, prep.sites, prep.unit_sets, prep.plans
    chunks, weights, n, batch_size = prep.chunks, prep.weights, prep.rows, prep.batch_size
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
    plans_t = []
    for s in sites:
        u, pc = unit_sets[s]
        local_units = len(u) if mesh is None else -(-len(u) // n_units_axis)
        cs = chunk_size or auto_chunk_size(graph, info, s, groups, local_units * num_values, memory_budget)
        plans_t.append(SitePlan(s, pc, plans[s], int(cs)))
    kw = dict(graph=graph, sites=tuple(plans_t), effect=effect, num_values=num_values)
    t0 = time.perf_counter()
    if mesh is None:
        args = (params, chunks, weights, tuple(jnp.asarray(unit_sets[s][0], jnp.int32) for s in sites))
        compiled = _program.lower(*args, **kw).compile() if progress else None
        t1 = time.perf_counter()
        out, base = jax.device_get(compiled(*args) if compiled is not None else _program(*args, **kw))
    else:
        prog = _sharded_program(mesh, **kw)
        g_units = tuple(distributed.put(distributed.pad_to(np.asarray(unit_sets[s][0], np.int32), n_units_axis), mesh,
                                        P("units")) for s in sites)
        t1 = time.perf_counter()
        out, base = prog(g_params, g_chunks, g_weights, g_units)
        out = [[np.asarray(distributed.gather(a))[: len(unit_sets[s][0])] for a in o] for s, o in zip(sites, out)]
        base = distributed.gather(base)[0]
    t2 = time.perf_counter()
    results = {}
    for s, (lo, hi, alphas, curve) in zip(sites, out):
        u, pc = unit_sets[s]
        results[s] = SiteACE(s, u, np.asarray(lo), np.asarray(hi), np.asarray(alphas), np.asarray(curve), pc)
    baseline = float(base)
    timings = {"compile_s": t1 - t0, "run_s": t2 - t1} if progress else {"total_s": t2 - t0}
    if progress:
        print(f"[ace] {len(sites)} sites, {sum(len(unit_sets[s][0]) for s in sites)} units x {num_values} values x {n} samples"
              f" in one program: compile {t1 - t0:.2f}s run {t2 - t1:.2f}s", file=sys.stderr, flush=True)
    return Localization(results, baseline, _effects.describe(effect), num_values, n, timings)
