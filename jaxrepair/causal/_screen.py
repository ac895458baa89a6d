"""Cheap screening of neuron-level ACE: Taylor estimates of every unit's curve, exact ACE on the top.

Exact ACE (:func:`~jaxrepair.causal.ace`) costs one downstream pass per (unit, α). Write the
intervention on unit ``j`` as an affine rewrite ``h_j ← σ_j·h_j + a_j`` (the whole feature map of
channel ``j`` for a per-channel site): ``θ_j = (σ_j, a_j) = (1, 0)`` is the identity and ``(0, α)`` is
``do(h_j = α)``. Expanding the effect ``g`` around the identity along ``(−1, α)``::

    E[g | do(h_j = α)] ≈ E[g] + α·E[∂g/∂a_j] − E[∂g/∂σ_j]                                  (order 1)
                        + ½·(α²·E[∂²g/∂a_j²] − 2α·E[∂²g/∂a_j∂σ_j] + E[∂²g/∂σ_j²])        (order 2)

For a dense unit ``∂g/∂a_j = ∂g/∂h_j`` and ``∂g/∂σ_j = h_j·∂g/∂h_j``, so order 1 is
``E[g] + E[(α − h_j)·∂g/∂h_j]``; for a channel the sums run over its spatial positions. The whole
curve of every unit of every site comes from *one* VJP per example (the gradient with respect to
every site's ``(σ, a)`` at once). Order 2 has two constructions:

* ``gauss_newton`` (effects with ``inputs``/``reduce``): with ``z`` the logits and ``J = ∂z/∂θ``, the
  Hessian is ``Jᵀ·∇²reduce·J + Σ_o ∂reduce/∂z_o·∇²z_o``. The second term is zero almost everywhere
  when the network between the site and the logits is piecewise linear (ReLU, max-pool, conv,
  dense, eval-mode batch norm, add), so there this is the *exact* second-order term — at the cost of
  one VJP per output class for all units at once, plus a Hessian-vector product of the (cheap)
  ``reduce`` per unit. On other networks it is the generalised Gauss–Newton approximation.
* ``exact`` (any effect, any network): second directional derivatives (forward-over-forward JVPs)
  along ``σ_j``, ``a_j`` and ``σ_j + a_j``, vmapped over units — a few downstream passes per unit.

The estimate is a local expansion around each example's own ``h_j``; a ``do`` far from it crosses
ReLU kinks that no derivative at ``h`` sees, so the estimate is a *screen*: :func:`screen` ranks every
unit by it and runs exact ACE only on the ``candidates`` best (Chattopadhyay et al., "Neural
network attributions: a causal perspective", ICML 2019, use the same second-order expansion for
input features; :mod:`jaxrepair.causal._input_ace` expands around the data mean instead, so no code is
shared beyond the effects). The α grid is exact ACE's: ``num_values`` points over each unit's
observed ``[min, max]`` on ``data['x']``, so estimated and exact curves are comparable point by point.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepair.causal import _effects
from jaxrepair.causal._ace import DEFAULT_SCORE, SCORES, Localization, SiteACE, _units_view, ace, auto_chunk_size, prepare
from jaxrepair.interventions import Intervention
from jaxrepair.models import Apply, Graph, Network, descendants, resume, run

HESSIANS = ("auto", "gauss_newton", "exact")

#: Incremented each time the estimate's per-chunk step is traced; tests assert it stays put.
TRACE_COUNT = {"estimate": 0}

# Operators that are piecewise linear in their (single, or summed) tensor inputs: through them the
# logits have zero curvature almost everywhere, which makes the Gauss–Newton term exact.
_PIECEWISE_LINEAR = frozenset({
    "dense", "conv2d", "maxpool", "avgpool", "global_avgpool", "flatten", "reduce_mean", "batchnorm", "standardize",
    "denormalize", "concat", "reshape", "transpose", "pad", "relu", "leaky_relu", "identity", "clip", "hard_sigmoid",
    "abs", "neg", "add", "sub",
})


def piecewise_linear_after(graph: Graph, sites: Sequence[str]) -> bool:
    """True when every operator downstream of ``sites`` is piecewise linear in its tensor inputs
    (``mul``/``div`` only by a constant)."""
    for n in graph.nodes:
        if n.name not in descendants(graph, frozenset(sites)):
            continue
        const = len(n.inputs) == 1
        if not (n.op in _PIECEWISE_LINEAR or (n.op == "mul" and const) or (n.op == "div" and const and not n.attr.get("reverse"))):
            return False
    return True


def _layout(shape: tuple, per_channel: bool) -> tuple:
    """Shape of a per-unit parameter of a site: the site's shape, or ``[1, …, 1, C]`` per channel."""
    return (1,) * (len(shape) - 1) + (shape[-1],) if per_channel else tuple(shape)


def _rewrite(theta: Mapping) -> dict:
    """``{site: (σ, a)}`` → the intervention map ``h ← σ·h + a`` on every unit of those sites."""
    return {s: Intervention(jnp.ones((), bool), sa[0], sa[1]) for s, sa in theta.items()}


def _identity(layouts: Mapping, lead: tuple = ()) -> dict:
    return {s: (jnp.ones(lead + lay), jnp.zeros(lead + lay)) for s, lay in layouts.items()}


# --------------------------------------------------------------------------- the per-chunk step


def _step_body(params, b, w, units, *, graph, sites, effect, order, hessian, chunk_sizes):
    """Weighted sums over one data chunk: ``(base, per site (lo, hi, ga, gs, haa, hsa, hss))`` with
    ``lo``/``hi`` over all units and the moments of ``units[i]`` (``[U_i]``)."""
    TRACE_COUNT["estimate"] += 1
    structured = _effects.is_structured(effect)
    env_x = run(graph, params, b["x"], all_sites=True)
    shapes = {s: env_x[s].shape[1:] for s, _ in sites}
    layouts = {s: _layout(shapes[s], pc) for s, pc in sites}
    ranges = []
    for s, pc in sites:  # the observed range on data['x'] — what exact ACE spans its α grid with
        h = env_x[s]
        valid = _units_view(jnp.broadcast_to(w.reshape(-1, *([1] * (h.ndim - 1))) > 0, h.shape), pc)
        hv = _units_view(h, pc)
        ranges.append((jnp.min(jnp.where(valid, hv, jnp.inf), 0), jnp.max(jnp.where(valid, hv, -jnp.inf), 0)))

    if structured:
        xs = effect.inputs(b)
        env = run(graph, params, xs, all_sites=True)

        def logits(theta):
            return resume(graph, params, env, _rewrite(theta))

        def total(z):
            return jnp.sum(w * effect.reduce(z, b))

        def objective(theta):
            return total(logits(theta))
    else:
        def objective(theta):
            return jnp.sum(w * effect(lambda xx: run(graph, params, xx, _rewrite(theta)), b))

    flat = lambda t: t.reshape(-1)  # noqa: E731 - [*layout] -> [units]
    zeros = [jnp.zeros(u.shape) for u in units]
    if order == 2 and hessian == "gauss_newton":
        # Per-row θ: each row's logits depend on its own (σ, a) only, so one VJP per output class
        # gives every row's Jacobian row for every unit of every site.
        z, vjp = jax.vjp(logits, _identity(layouts, (xs.shape[0],)))
        n_rows, n_out = z.shape[0], math.prod(z.shape[1:])
        cot = jnp.broadcast_to(jnp.eye(n_out).reshape(n_out, 1, *z.shape[1:]), (n_out, *z.shape))  # [O, R, *out]
        (jac,) = jax.vmap(vjp)(cot)  # {site: ([O, R, *layout], [O, R, *layout])}
        base, gz = jax.value_and_grad(total)(z)
        _, hvp = jax.linearize(jax.grad(total), z)
        moments = []
        for (s, _), u in zip(sites, units):
            # [U, R, O]: the logits' tangents along σ_j and a_j
            js, ja = (jnp.transpose(j.reshape(n_out, n_rows, -1)[:, :, u], (2, 1, 0)) for j in jac[s])
            gzf = gz.reshape(n_rows, n_out)
            ga, gs = jnp.einsum("uro,ro->u", ja, gzf), jnp.einsum("uro,ro->u", js, gzf)

            def quad(t):
                ts, ta = t
                ha, hs = hvp(ta.reshape(z.shape)).reshape(ta.shape), hvp(ts.reshape(z.shape)).reshape(ts.shape)
                return jnp.sum(ta * ha), jnp.sum(ts * ha), jnp.sum(ts * hs)

            haa, hsa, hss = jax.lax.map(quad, (js, ja), batch_size=chunk_sizes[s])
            moments.append((ga, gs, haa, hsa, hss))
    else:
        base, grads = jax.value_and_grad(objective)(_identity(layouts))
        moments = []
        for (s, _), u, zz in zip(sites, units, zeros):
            gs, ga = flat(grads[s][0])[u], flat(grads[s][1])[u]
            if order == 1:
                moments.append((ga, gs, zz, zz, zz))
                continue
            lay = layouts[s]
            if structured:
                def f(th, s=s):
                    return total(resume(graph, params, env, _rewrite({s: th})))
            else:
                def f(th, s=s):
                    return jnp.sum(w * effect(lambda xx: run(graph, params, xx, _rewrite({s: th})), b))
            th0 = (jnp.ones(lay), jnp.zeros(lay))

            def second(v, f=f, th0=th0):  # vᵀ∇²f v by forward-over-forward
                return jax.jvp(lambda th: jax.jvp(f, (th,), (v,))[1], (th0,), (v,))[1]

            def unit(j, lay=lay, second=second):
                e = (jnp.arange(math.prod(lay)) == j).astype(jnp.float32).reshape(lay)
                z0 = jnp.zeros(lay)
                daa, dss, dsum = second((z0, e)), second((e, z0)), second((e, e))
                return daa, 0.5 * (dsum - daa - dss), dss

            haa, hsa, hss = jax.lax.map(unit, u, batch_size=chunk_sizes[s])
            moments.append((ga, gs, haa, hsa, hss))
    return base, tuple((lo, hi, *m) for (lo, hi), m in zip(ranges, moments))


_step = jax.jit(_step_body, static_argnames=("graph", "sites", "effect", "order", "hessian", "chunk_sizes"))


# --------------------------------------------------------------------------- the estimate


def taylor_ace(
    model: Network | Apply,
    data,
    effect,
    *,
    params=None,
    sites: Sequence[str] | None = None,
    units: Mapping[str, Sequence[int]] | None = None,
    num_values: int = 16,
    per_channel: bool | None = None,
    order: int = 2,
    hessian: str = "auto",
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: float = 512e6,
    progress: bool = False,
) -> Localization:
    """First- or second-order Taylor estimate of every unit's ACE curve (see the module docstring).

    Args:
      model, data, effect, params, sites, units, num_values, per_channel, batch_size: as in
        :func:`~jaxrepair.causal.ace`; the α grid is the same.
      order: 1 (one VJP per example) or 2 (adds the curvature term).
      hessian: for ``order=2``: ``"gauss_newton"`` (effects with ``inputs``/``reduce``; exact on
        piecewise-linear networks), ``"exact"`` (any effect) or ``"auto"`` (Gauss–Newton where it is
        exact, else exact).
      chunk_size: units whose second-order terms are computed at once (default: what fits
        ``memory_budget`` bytes).
      progress: compile ahead of time, time compilation and run apart (``timings``: ``compile_s``,
        ``run_s`` and XLA's ``flops`` for the whole data) and print one line to stderr.

    Returns:
      A :class:`Localization` whose curves are the estimates (rank with ``.ranking()`` as usual).
    """
    if sites is not None and not list(sites):
        raise ValueError("sites is empty: name at least one site (or leave it out for every hidden site)")
    if sites is not None and len(set(sites)) != len(list(sites)):
        raise ValueError(f"sites are listed more than once: {list(sites)}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if hessian not in HESSIANS:
        raise ValueError(f"unknown hessian {hessian!r}; choose one of {HESSIANS}")
    prep = prepare(model, data, effect, params=params, sites=sites, units=units, num_values=num_values,
                   per_channel=per_channel, batch_size=batch_size)
    graph, params, info, sites, unit_sets = prep.graph, prep.params, prep.info, prep.sites, prep.unit_sets
    chunks, weights, n, batch_size = prep.chunks, prep.weights, prep.rows, prep.batch_size
    structured = _effects.is_structured(effect)
    if order == 2 and hessian == "gauss_newton" and not structured:
        raise ValueError(f"hessian='gauss_newton' needs an effect with inputs/reduce; {_effects.describe(effect)} is a "
                         f"plain callable (use hessian='exact')")
    if hessian == "auto":
        hessian = "gauss_newton" if structured and piecewise_linear_after(graph, sites) else "exact"
    first = jax.tree.map(lambda a: a[0], chunks)
    rows = int(jax.eval_shape(effect.inputs, first).shape[0]) if structured else batch_size
    sizes = tuple((s, int(chunk_size or auto_chunk_size(graph, info, s, rows, len(unit_sets[s][0]), memory_budget)))
                  for s in sites)
    kw = dict(graph=graph, sites=tuple((s, unit_sets[s][1]) for s in sites), effect=effect, order=order,
              hessian=hessian if order == 2 else "none", chunk_sizes=_Sizes(sizes))
    u_args = tuple(jnp.asarray(unit_sets[s][0], jnp.int32) for s in sites)
    t0 = time.perf_counter()
    step, flops = functools.partial(_step, **kw), None
    if progress:  # compiled ahead of time to time it apart and read XLA's FLOP count
        step = _step.lower(params, first, weights[0], u_args, **kw).compile()
        cost = step.cost_analysis()
        flops = (cost[0] if isinstance(cost, (list, tuple)) else cost or {}).get("flops")
    t1 = time.perf_counter()
    total = None
    for c in range(int(weights.shape[0])):  # a Python loop: XLA CPU runs conv gradients in loops slowly
        out = step(params, jax.tree.map(lambda a: a[c], chunks), weights[c], u_args)
        total = out if total is None else _combine(total, out)
    base, per_site = jax.device_get(total)
    t2 = time.perf_counter()
    wsum = float(n)
    grid = jnp.linspace(0.0, 1.0, num_values)
    results = {}
    for s, (lo, hi, ga, gs, haa, hsa, hss) in zip(sites, per_site):
        u, pc = unit_sets[s]
        lo, hi = jnp.asarray(lo)[u], jnp.asarray(hi)[u]
        alphas = np.asarray(lo[:, None] + (hi - lo)[:, None] * grid[None, :])  # exactly as exact ACE spans it
        a = alphas.astype(np.float64)
        curve = float(base) + a * np.asarray(ga, np.float64)[:, None] - np.asarray(gs, np.float64)[:, None]
        if order == 2:
            curve = curve + 0.5 * (a ** 2 * np.asarray(haa, np.float64)[:, None] - 2 * a * np.asarray(hsa, np.float64)[:, None]
                                   + np.asarray(hss, np.float64)[:, None])
        results[s] = SiteACE(s, u, np.asarray(lo), np.asarray(hi), alphas, curve / wsum, pc)
    timings = {"total_s": t2 - t0}
    if progress:
        timings.update(compile_s=t1 - t0, run_s=t2 - t1)
        if flops is not None:
            timings["flops"] = float(flops) * int(weights.shape[0])
        print(f"[taylor_ace] order {order}{' (' + hessian + ')' if order == 2 else ''}: {len(sites)} sites, "
              f"{sum(len(unit_sets[s][0]) for s in sites)} units x {n} samples: compile {t1 - t0:.2f}s run {t2 - t1:.2f}s",
              file=sys.stderr, flush=True)
    return Localization(results, float(base) / wsum, _effects.describe(effect), num_values, n, timings)


class _Sizes(tuple):
    """``((site, chunk size), …)`` as a hashable static argument that also answers ``[site]``."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict(self)[key]
        return super().__getitem__(key)


def _combine(a, b):
    (base_a, sites_a), (base_b, sites_b) = a, b
    return base_a + base_b, tuple(
        (jnp.minimum(x[0], y[0]), jnp.maximum(x[1], y[1]), *(p + q for p, q in zip(x[2:], y[2:])))
        for x, y in zip(sites_a, sites_b))


# --------------------------------------------------------------------------- the screen


@dataclasses.dataclass
class Screening(Localization):
    """:func:`screen`'s result: exact ACE of the candidates (ranked as any :class:`Localization`), the
    estimate every unit was screened by, the units left out per site, and the compute used."""

    estimate: Localization | None = None
    screened_out: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # site -> [U_out]
    compute: dict = dataclasses.field(default_factory=dict)

    def to_json(self, *, top_k: int = 20) -> dict:
        out = super().to_json(top_k=top_k)
        out["screened_out"] = {s: u.tolist() for s, u in self.screened_out.items()}
        out["compute"] = self.compute
        out["estimate_top"] = [n._asdict() for n in self.estimate.top(top_k)] if self.estimate else []
        return out


def screen(
    model: Network | Apply,
    data,
    effect,
    *,
    candidates: int = 30,
    order: int = 2,
    hessian: str = "auto",
    score: str = DEFAULT_SCORE,
    params=None,
    sites: Sequence[str] | None = None,
    num_values: int = 16,
    per_channel: bool | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: float = 512e6,
    devices=None,
    progress: bool = False,
) -> Screening:
    """Ranks every unit of ``sites`` by :func:`taylor_ace`, then runs exact :func:`ace` on the
    ``candidates`` best of all sites together (by ``score``).

    The exact program is compiled for the per-site candidate counts; a later screen with the same
    counts reuses it. ``result.ranking()`` ranks the candidates by their exact curves.

    Args:
      candidates: units kept for exact ACE over all sites (at least 1).
      order, hessian: the estimate's (see :func:`taylor_ace`).
      score: the score candidates are chosen by (one of ``SCORES``).
      devices: passed to the exact stage (see :func:`ace`).
      progress: time compilation apart in both stages (see :func:`taylor_ace`).
      The rest: as in :func:`ace`.

    Returns:
      A :class:`Screening`.
    """
    if not isinstance(candidates, (int, np.integer)) or isinstance(candidates, bool) or candidates < 1:
        raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
    common = dict(params=params, sites=sites, num_values=num_values, per_channel=per_channel, batch_size=batch_size,
                  chunk_size=chunk_size, memory_budget=memory_budget)
    t0 = time.perf_counter()
    est = taylor_ace(model, data, effect, order=order, hessian=hessian, progress=progress, **common)
    t1 = time.perf_counter()
    keep = {s: [] for s in est.sites}
    for nrn in est.ranking(score)[:candidates]:
        keep[nrn.site].append(nrn.unit)
    chosen = {s: sorted(u) for s, u in keep.items() if u}
    exact = ace(model, data, effect, units=chosen, devices=devices, progress=progress, **{**common, "sites": list(chosen)})
    t2 = time.perf_counter()
    out = {}
    for s, r in est.sites.items():
        out[s] = exact.sites[s] if s in exact.sites else SiteACE(
            s, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
            np.zeros((0, num_values), np.float32), np.zeros((0, num_values)), r.per_channel)
    screened_out = {s: np.setdiff1d(r.units, chosen.get(s, [])) for s, r in est.sites.items()}
    n_all = sum(len(r.units) for r in est.sites.values())
    n_exact = sum(len(u) for u in chosen.values())
    compute = {"estimate_s": t1 - t0, "exact_s": t2 - t1, "total_s": t2 - t0, "order": order,
               "units": n_all, "exact_units": n_exact, "exact_pairs": n_exact * num_values,
               "pairs_saved": (n_all - n_exact) * num_values,
               "estimate_timings": est.timings, "exact_timings": exact.timings}
    return Screening(out, exact.baseline, exact.effect, num_values, exact.num_samples,
                     {"estimate_s": t1 - t0, "exact_s": t2 - t1, "total_s": t2 - t0},
                     estimate=est, screened_out=screened_out, compute=compute)


__all__ = ["HESSIANS", "Screening", "piecewise_linear_after", "screen", "taylor_ace"]
