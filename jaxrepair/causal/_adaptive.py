"""Adaptive exact ACE: the causal ranking of a large network, exact where it matters.

Exact ACE (:func:`jaxrepair.causal.ace`) spends one downstream pass on every unit × α value × row.
For a unit ``j`` its score is a mean over a finite population of ``P = rows × values`` (row, α)
pairs: ``care_mean_j = mean_{(x, v)} effect(x | do(h_j = α_{j,v}))`` and
``interventional_change_j = |care_mean_j − E[effect]|`` (``E[effect]`` is computed exactly, one
pass per row). ``adaptive_ace`` estimates every unit's mean from the same random order of pairs
and *races* the units (successive accepts and rejects, Bubeck, Wang & Viswanathan, "Multiple
identifications in multi-armed bandits", ICML 2013): after each round the pairs seen double; a
unit whose interval lies below ``k`` others' is dropped, one above all but fewer than the open
slots is accepted into the top ``k``. Only contenders pay for more pairs; the accepted units are
then evaluated on every pair, so the reported top ``k`` and their order are exact.

Intervals (two-sided, Bonferroni over units × rounds, so all hold at once with probability ≥ 1−δ):

* ``"bernstein"``: the empirical Bernstein–Serfling bound for sampling without replacement
  (Bardenet & Maillard, "Concentration inequalities for sampling without replacement",
  Bernoulli 2015, Thm. 3), needing the range of the effect's values: a guarantee.
* ``"normal"`` (default): the normal approximation with the finite-population correction,
  ``z · s · sqrt((1 − n/P) / n)``: approximate, and far narrower at small ``n``.

With every interval holding, the accepted units are the full-data top ``k`` (ties at the boundary
are raced to the full population, where values are exact). Fixed shapes: pairs go through one
compiled program per site in blocks of ``block`` pairs × ``unit_chunk`` units (lists padded), so
rounds, selections and seeds reuse it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrepair.causal import _effects
from jaxrepair.causal._ace import DEFAULT_SCORE, Neuron, SitePlan, _rank1_plan, do_effect, prepare, site_ranges, site_shapes
from jaxrepair.models import run

BOUNDS = ("normal", "bernstein")
#: The scores that are means over (row, α) pairs, and so can be raced (``care_spread`` is a range).
ADAPTIVE_SCORES = ("interventional_change", "care_mean")
#: Incremented each time a program is traced; tests assert rounds and seeds reuse them.
TRACE_COUNT = {"pairs": 0, "ranges": 0}
_KAPPA = 7 / 3 + 3 / math.sqrt(2)  # Bardenet & Maillard's constant


def _ranges_and_base_body(params, chunks, weights, *, graph, sites, effect):
    """Every localised site's unit ranges and the exact ``E[effect]`` over all rows."""
    TRACE_COUNT["ranges"] += 1
    shapes = site_shapes(graph, params, chunks["x"][0, :1])
    ranges = site_ranges(graph, params, chunks, weights, sites, shapes)

    def step(total, inp):
        b, w = inp
        if _effects.is_structured(effect):
            e = effect.reduce(run(graph, params, effect.inputs(b)), b)
        else:
            e = effect(lambda xx: run(graph, params, xx), b)
        return total + jnp.sum(w * e), None

    base, _ = lax.scan(step, jnp.zeros(()), (chunks, weights))
    return ranges, base / jnp.sum(weights)


_ranges_and_base = jax.jit(_ranges_and_base_body, static_argnames=("graph", "sites", "effect"))


def _pairs_body(params, batch, rows, values, lo, hi, units, *, graph, sp, effect, num_values):
    """``[units, pairs]``: effect of pair ``(rows[p], values[p])`` under ``do(h_u = α_{u, v})`` for each
    unit ``u`` of ``units`` (``lo``/``hi`` their observed ranges), each pair evaluated on its own row."""
    TRACE_COUNT["pairs"] += 1
    shape = site_shapes(graph, params, batch["x"][:1])[sp.site]
    grid = jnp.linspace(0.0, 1.0, num_values)
    alphas = lo[:, None] + (hi - lo)[:, None] * grid[values][None, :]  # [C, B], as exact ACE's grid
    picked = jax.tree.map(lambda a: a[rows], batch)

    def pair(b1, a_col):  # one row, every unit
        b = jax.tree.map(lambda t: t[None], b1)
        env = run(graph, params, effect.inputs(b), all_sites=True) if _effects.is_structured(effect) else None
        return jax.vmap(lambda j, a: do_effect(graph, params, effect, sp, shape, env, b, j, a)[0])(units, a_col)

    return jax.vmap(pair)(picked, alphas.T).T


_pairs = jax.jit(_pairs_body, static_argnames=("graph", "sp", "effect", "num_values"))


def known_range(effect) -> tuple[float, float] | None:
    """The range of a built-in effect's values when it reads probabilities, else None."""
    if getattr(effect, "output", None) != "prob":
        return None
    if isinstance(effect, (_effects.Fairness, _effects.TargetOutput)):
        return (0.0, 1.0)
    if isinstance(effect, _effects.CounterfactualPair):
        return (0.0, 1.0) if effect.target is not None else (0.0, math.sqrt(2.0))
    return None


def half_width(std: np.ndarray, n: np.ndarray, population: int, delta: float, bound: str, span: float) -> np.ndarray:
    """Two-sided half-widths at level ``1 − delta`` of the mean of ``n`` of ``population`` values
    drawn without replacement (``std``: their standard deviation, ddof 0); 0 where ``n`` is all."""
    n = np.asarray(n, np.float64)
    frac = np.minimum(n / population, 1.0)
    if bound == "normal":
        from scipy.stats import norm

        z = norm.isf(delta / 2)
        s = std * np.sqrt(n / np.maximum(n - 1, 1))  # ddof 1
        out = z * s * np.sqrt((1 - frac) / n)
    else:
        log = math.log(10 / delta)  # each side at delta / 2
        rho = np.where(n <= population / 2, 1 - (n - 1) / population, (1 - frac) * (1 + 1 / n))
        out = std * np.sqrt(2 * rho * log / n) + _KAPPA * span * log / n
    return np.where(n >= population, 0.0, out)


def score_interval(mean_low, mean_high, baseline: float, score: str):
    """The interval of a unit's score from the interval of its pair mean."""
    if score == "care_mean":
        return mean_low, mean_high
    dl, du = mean_low - baseline, mean_high - baseline
    straddles = (dl <= 0) & (du >= 0)
    low = np.where(straddles, 0.0, np.minimum(np.abs(dl), np.abs(du)))
    return low, np.maximum(np.abs(dl), np.abs(du))


@dataclasses.dataclass
class AdaptiveSite:
    """One site's units after the race. Arrays are ``[units]``."""

    site: str
    units: np.ndarray
    estimate: np.ndarray  # the score from the pairs seen (exact where ``exact``)
    low: np.ndarray  # the score's interval
    high: np.ndarray
    mean: np.ndarray  # mean effect over the pairs seen (care_mean)
    pairs: np.ndarray  # pairs seen
    exact: np.ndarray  # bool: every pair seen
    top: np.ndarray  # bool: in the reported top k
    low_value: np.ndarray  # observed min and max (the α grid spans them)
    high_value: np.ndarray
    per_channel: bool


@dataclasses.dataclass
class AdaptiveLocalization:
    """The result of :func:`adaptive_ace`; a localiser repair can draw neurons from."""

    sites: dict[str, AdaptiveSite]
    score: str
    k: int
    delta: float
    bound: str
    baseline: float
    num_values: int
    num_samples: int
    population: int  # pairs per unit (rows × values)
    rounds: int
    pairs_used: int
    pairs_exact: int  # what exact ACE would evaluate
    guarantee: str
    timings: dict

    @property
    def saving(self) -> float:
        """Exact ACE's (row, α) evaluations over the race's."""
        return self.pairs_exact / max(self.pairs_used, 1)

    def _check_score(self, score):
        if score is not None and score != self.score:
            raise ValueError(f"this adaptive localisation ranked by {self.score!r}; it has no {score!r} ranking "
                             f"(run adaptive_ace(..., score={score!r}))")

    def scores(self, score: str | None = None) -> dict[str, np.ndarray]:
        self._check_score(score)
        return {s: r.estimate for s, r in self.sites.items()}

    def ranking(self, score: str | None = None) -> list[Neuron]:
        """The top ``k`` by exact score, then every other unit by its estimate."""
        self._check_score(score)
        rows = [(not bool(r.top[i]), -float(r.estimate[i]), Neuron(s, int(u), float(r.estimate[i])))
                for s, r in self.sites.items() for i, u in enumerate(r.units)]
        order = sorted(range(len(rows)), key=lambda i: rows[i][:2])  # stable: site order, then unit
        return [rows[i][2] for i in order]

    def top(self, k: int | None = None, score: str | None = None) -> list[Neuron]:
        k = self.k if k is None else k
        if k > self.k:
            raise ValueError(f"only the top {self.k} are exact and guaranteed; ask adaptive_ace for k={k}")
        return self.ranking(score)[:k]

    def to_json(self) -> dict:
        return {
            "score": self.score, "k": self.k, "delta": self.delta, "bound": self.bound, "baseline_effect": self.baseline,
            "num_values": self.num_values, "num_samples": self.num_samples, "pairs_per_unit": self.population,
            "rounds": self.rounds, "pairs_used": self.pairs_used, "pairs_exact": self.pairs_exact,
            "saving": self.saving, "guarantee": self.guarantee, "timings_s": self.timings,
            "top": [n._asdict() for n in self.top()],
            "sites": {s: {"units": r.units.tolist(), "estimate": r.estimate.tolist(), "low": r.low.tolist(),
                          "high": r.high.tolist(), "pairs": r.pairs.tolist(), "exact": r.exact.tolist(),
                          "top": r.top.tolist()} for s, r in self.sites.items()},
        }


def _guarantee(bound, delta, score, k, units, rounds, population, span) -> str:
    how = (f"empirical Bernstein-Serfling bounds for sampling without replacement (Bardenet & Maillard 2015), "
           f"effect values in [{span[0]:g}, {span[1]:g}]" if bound == "bernstein" else
           "normal-approximation intervals with the finite-population correction, so approximate: it holds to the "
           "accuracy of the normal approximation of a mean of sampled pairs")
    return (f"With probability at least {1 - delta:g} over the random order of (row, value) pairs, every unit's "
            f"interval contains its full-data {score} ({how}; Bonferroni over {units} units x {rounds} rounds), "
            f"and then the reported top {k} is the full-data top {k} of exact ACE on the same rows and grid. "
            f"The top {k} were evaluated on all {population} pairs, so their values and order are exact; "
            f"the other units are ranked by estimate.")


def adaptive_ace(
    model,
    data,
    effect,
    *,
    k: int = 10,
    delta: float = 0.05,
    score: str = DEFAULT_SCORE,
    bound: str = "normal",
    value_range: tuple[float, float] | None = None,
    num_values: int = 16,
    params=None,
    sites: Sequence[str] | None = None,
    units: Mapping[str, Sequence[int]] | None = None,
    per_channel: bool | None = None,
    first: int | None = None,
    block: int = 64,
    unit_chunk: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> AdaptiveLocalization:
    """The top ``k`` units by exact ACE, racing the units over a random order of (row, α) pairs.

    Args:
      model, data, effect, params, sites, units, num_values, per_channel: as :func:`ace` (same grid).
      k: how many units to identify (and evaluate exactly).
      delta: the probability that some interval misses (``0 < delta < 1``).
      score: ``"interventional_change"`` (default) or ``"care_mean"``.
      bound: ``"normal"`` (approximate) or ``"bernstein"`` (a guarantee; needs the effect's range).
      value_range: ``(low, high)`` of the effect's values, for ``"bernstein"`` (default: known for
        built-in effects that read probabilities).
      first: pairs per unit in the first round (default ``block``, or every pair when there are fewer);
        each round doubles them.
      block, unit_chunk: pairs and units per call of the compiled program (its fixed shape).
      seed: the order of the pairs.
      progress: one line per round on stderr.

    Returns:
      An :class:`AdaptiveLocalization`; ``.top()`` is the top ``k``, ``.guarantee`` says what holds.
    """
    if score not in ADAPTIVE_SCORES:
        raise ValueError(f"adaptive_ace races scores that are means over (row, value) pairs: {ADAPTIVE_SCORES}; "
                         f"{score!r} is not one (care_spread is a range over values: use ace)")
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound {bound!r}; choose one of {BOUNDS}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    for name, v in (("block", block), ("unit_chunk", unit_chunk)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    span = value_range if value_range is not None else known_range(effect)
    if bound == "bernstein":
        if span is None:
            raise ValueError(f"bound='bernstein' needs value_range=(low, high) of effect {_effects.describe(effect)}'s values")
        if not (len(span) == 2 and all(math.isfinite(float(v)) for v in span) and span[0] < span[1]):
            raise ValueError(f"value_range must be (low, high) with finite low < high, got {span}")
    prep = prepare(model, data, effect, params=params, sites=sites, units=units, num_values=num_values,
                   per_channel=per_channel)
    n_rows = prep.rows
    population = n_rows * num_values
    first = min(block, population) if first is None else first
    if int(first) != first or first < 2:
        raise ValueError(f"first (pairs per unit in the first round) must be an integer of at least 2, got {first}")
    if first > population:
        raise ValueError(f"first={first} pairs exceed the {population} (row, value) pairs per unit "
                         f"({n_rows} rows x {num_values} values): one round would be all of them; use ace")
    site_units = [(s, prep.unit_sets[s][0]) for s in prep.sites]
    total_units = sum(len(u) for _, u in site_units)
    if not 1 <= k <= total_units:
        raise ValueError(f"k must lie in [1, {total_units}] (the units localised), got {k}")

    t0 = time.perf_counter()
    plans = tuple(SitePlan(s, prep.unit_sets[s][1], _rank1_plan(prep.graph, s, prep.unit_sets[s][1], prep.info[s].shape), 0)
                  for s in prep.sites)
    ranges, base = jax.device_get(_ranges_and_base(prep.params, prep.chunks, prep.weights, graph=prep.graph,
                                                   sites=plans, effect=effect))
    baseline = float(base)
    order = np.asarray(jax.random.permutation(jax.random.key(seed), population))
    pair_rows, pair_values = (order // num_values).astype(np.int32), (order % num_values).astype(np.int32)
    rounds = 1 + math.ceil(math.log2(population / first))
    level = delta / (total_units * rounds)

    # flat unit table: site index, unit, observed range
    site_of = np.concatenate([np.full(len(u), i) for i, (_, u) in enumerate(site_units)])
    unit_of = np.concatenate([u for _, u in site_units])
    lo_of = np.concatenate([np.asarray(ranges[i][0])[u] for i, (_, u) in enumerate(site_units)])
    hi_of = np.concatenate([np.asarray(ranges[i][1])[u] for i, (_, u) in enumerate(site_units)])
    s1, s2 = np.zeros(total_units), np.zeros(total_units)
    seen = np.zeros(total_units, np.int64)

    def evaluate(ids: np.ndarray, stop: int) -> None:
        """Advances units ``ids`` (all at the same count) to ``stop`` pairs."""
        start = int(seen[ids[0]])
        for i in np.unique(site_of[ids]):
            sid = ids[site_of[ids] == i]
            for c in range(0, len(sid), unit_chunk):
                chunk = sid[c:c + unit_chunk]
                pad = np.concatenate([chunk, np.repeat(chunk[:1], unit_chunk - len(chunk))])
                for p in range(start, stop, block):
                    idx = np.arange(p, p + block) % population  # the last block wraps; the extra is dropped
                    vals = np.asarray(_pairs(prep.params, prep.batch, pair_rows[idx], pair_values[idx], lo_of[pad],
                                             hi_of[pad], unit_of[pad].astype(np.int32), graph=prep.graph, sp=plans[i],
                                             effect=effect, num_values=num_values), np.float64)
                    vals = vals[:len(chunk), :min(block, stop - p)]
                    s1[chunk] += vals.sum(1)
                    s2[chunk] += (vals ** 2).sum(1)
        seen[ids] = stop

    def intervals(ids):
        n = seen[ids].astype(np.float64)
        mean = s1[ids] / n
        std = np.sqrt(np.maximum(s2[ids] / n - mean ** 2, 0.0))
        h = half_width(std, n, population, level, bound, 0.0 if span is None else span[1] - span[0])
        low, high = score_interval(mean - h, mean + h, baseline, score)
        return mean, low, high

    state = np.zeros(total_units, np.int8)  # 0 open, 1 accepted, -1 dropped
    frozen = {}  # id -> (mean, low, high) when dropped
    from jaxrepair.records import Progress

    bar = Progress("adaptive ace", rounds, enabled=progress)
    r = 0
    for r in range(rounds):
        open_ids = np.flatnonzero(state == 0)
        evaluate(open_ids, min(population, first * 2 ** r))
        mean, low, high = intervals(open_ids)
        slots = k - int((state == 1).sum())
        est = np.abs(mean - baseline) if score == "interventional_change" else mean
        if seen[open_ids[0]] >= population:  # exact: fill the slots by value
            ranked = open_ids[np.argsort(-est, kind="stable")]
            state[ranked[:slots]] = 1
            state[ranked[slots:]] = -1
            frozen.update({int(j): (m, lo, hi) for j, m, lo, hi in zip(open_ids, mean, low, high)})
            bar.update(r + 1, f"{len(open_ids)} units exact")
            break
        above = (low[None, :] > high[:, None]).sum(1)  # others surely above each unit
        could = (high[None, :] > low[:, None]).sum(1) - (high > low)  # others possibly above (not itself)
        drop = above >= slots
        accept = ~drop & (could < slots)
        if accept.sum() > slots:  # ties at the boundary: the highest estimates
            keep = np.flatnonzero(accept)[np.argsort(-est[accept], kind="stable")[:slots]]
            accept = np.isin(np.arange(len(open_ids)), keep)
        state[open_ids[accept]] = 1
        state[open_ids[drop]] = -1
        frozen.update({int(j): (m, lo, hi) for j, m, lo, hi in zip(open_ids[drop | accept], mean[drop | accept],
                                                                     low[drop | accept], high[drop | accept])})
        bar.update(r + 1, f"{int(seen[open_ids[0]])} pairs/unit: {int(accept.sum())} in, {int(drop.sum())} out, "
                          f"{int((state == 0).sum())} open")
        if (state == 1).sum() == k:
            state[state == 0] = -1
            rest = np.flatnonzero((state == -1) & ~np.isin(np.arange(total_units), list(frozen)))
            if len(rest):
                m, lo, hi = intervals(rest)
                frozen.update({int(j): v for j, v in zip(rest, zip(m, lo, hi))})
            break
    # the top k on every pair: exact values and order
    top_ids = np.flatnonzero(state == 1)
    for count in np.unique(seen[top_ids]):
        ids = top_ids[seen[top_ids] == count]
        if count < population:
            evaluate(ids, population)
    mean_all = np.array([frozen[int(j)][0] if int(j) in frozen else np.nan for j in range(total_units)])
    low_all = np.array([frozen[int(j)][1] if int(j) in frozen else np.nan for j in range(total_units)])
    high_all = np.array([frozen[int(j)][2] if int(j) in frozen else np.nan for j in range(total_units)])
    m, lo, hi = intervals(top_ids)
    mean_all[top_ids], low_all[top_ids], high_all[top_ids] = m, lo, hi
    estimate = np.abs(mean_all - baseline) if score == "interventional_change" else mean_all
    bar.close(f"top {k} in {r + 1} rounds, {int(seen.sum())} of {total_units * population} pairs")
    wall = time.perf_counter() - t0

    out = {}
    for i, (s, u) in enumerate(site_units):
        sel = site_of == i
        out[s] = AdaptiveSite(s, u, estimate[sel], low_all[sel], high_all[sel], mean_all[sel], seen[sel].copy(),
                              seen[sel] >= population, state[sel] == 1, lo_of[sel], hi_of[sel], prep.unit_sets[s][1])
    return AdaptiveLocalization(out, score, k, delta, bound, baseline, num_values, n_rows, population, r + 1,
                                int(seen.sum()), total_units * population,
                                _guarantee(bound, delta, score, k, total_units, rounds, population,
                                           span or (float("nan"), float("nan"))), {"total_s": wall})
