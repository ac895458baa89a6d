"""NSGA-II and NSGA-III in JAX: fixed shapes, one compiled ``lax.scan`` over generations.

Follows pymoo 0.6 (Blank & Deb), the oracle the tests compare against:

* **non-dominated sorting** with Deb's constrained domination (a feasible point beats an infeasible
  one, of two infeasible points the smaller constraint violation wins, of two feasible ones Pareto
  domination decides) — for unconstrained problems exactly pymoo's ranks;
* **crowding distance** as pymoo's ``calc_crowding_distance`` per front (fronts of at most two
  points infinite);
* **NSGA-II survival**: rank, then crowding (descending, random ties); parents by pymoo's binary
  tournament (constraint violation, then domination, then crowding);
* **NSGA-III survival**: Das–Dennis reference directions, pymoo's hyperplane normalisation (ideal
  point, extreme points by the achievement scalarising function, intercepts with its fall-backs),
  association by perpendicular distance and niching on the splitting front; parents by constraint
  violation, else at random;
* **SBX** crossover (per mating with probability ``prob_c``, per variable 0.5, exchange 0.5) and
  **polynomial mutation** (per individual 0.9, per variable ``min(0.5, 1/n_var)``), pymoo's formulas.

Differences from pymoo: pymoo repeats mating until no child duplicates an individual
(``eliminate_duplicates``, up to 100 rounds); here three rounds are drawn at once and the first
``population_size`` unique children kept (a duplicate stays only if three rounds give too few).
pymoo's niching picks every least-crowded niche of a round at once; here one niche at a time with
random ties, which draws from the same distribution. Everything is float32.

Every loop has a fixed trip count or a data-dependent ``while_loop`` over fixed shapes, so a new
seed, bound, objective function's data or population of the same size reuses the program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ALGORITHMS = ("nsga2", "nsga3")


@dataclasses.dataclass(frozen=True)
class NSGA:
    """An NSGA variant and its operator settings (static: hashable).

    ``partitions``: NSGA-III's Das–Dennis partitions (``None``: the most whose directions fit the
    population). pymoo's defaults: SBX ``eta_c`` 15 and ``prob_c`` 0.9 for NSGA-II, 30 and 1.0 for
    NSGA-III; polynomial mutation ``eta_m`` 20."""

    algorithm: str = "nsga2"
    population_size: int = 64
    eta_c: float | None = None
    prob_c: float | None = None
    eta_m: float = 20.0
    prob_m: float = 0.9
    partitions: int | None = None

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown multi-objective algorithm {self.algorithm!r}; choose one of {ALGORITHMS}")
        if self.population_size < 4 or self.population_size % 2:
            raise ValueError(f"{self.algorithm} needs an even population of at least 4, got {self.population_size}")
        for name in ("eta_c", "eta_m"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive, got {v}")
        for name in ("prob_c", "prob_m"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    @property
    def crossover_eta(self) -> float:
        return self.eta_c if self.eta_c is not None else (15.0 if self.algorithm == "nsga2" else 30.0)

    @property
    def crossover_prob(self) -> float:
        return self.prob_c if self.prob_c is not None else (0.9 if self.algorithm == "nsga2" else 1.0)

    def directions(self, n_obj: int) -> np.ndarray:
        """NSGA-III's reference directions for ``n_obj`` objectives (checked against the population)."""
        p = self.partitions
        if p is None:
            p = 1
            while math.comb(p + 1 + n_obj - 1, n_obj - 1) <= self.population_size:
                p += 1
        dirs = reference_directions(n_obj, p)
        if len(dirs) > self.population_size:
            raise ValueError(f"nsga3 with {n_obj} objectives and {p} partitions has {len(dirs)} reference directions, "
                             f"more than the population of {self.population_size}: raise population_size to at least "
                             f"{len(dirs)} or use fewer partitions")
        return dirs


def reference_directions(n_obj: int, partitions: int) -> np.ndarray:
    """Das–Dennis directions: every point of the simplex with coordinates in steps of 1/partitions
    (pymoo's ``get_reference_directions("das-dennis", n_obj, n_partitions=partitions)``, same order)."""
    if n_obj < 2:
        raise ValueError(f"a multi-objective search needs at least 2 objectives, got {n_obj}")
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    out = []

    def rec(prefix, left, depth):
        if depth == n_obj - 1:
            out.append(prefix + [left])
            return
        for i in range(left + 1):
            rec(prefix + [i], left - i, depth + 1)

    rec([], partitions, 0)
    return np.asarray(out, np.float64) / partitions


# --------------------------------------------------------------------------- sorting and crowding


def dominance(F: jax.Array, cv: jax.Array | None = None) -> jax.Array:
    """``[n, n]``: ``D[i, j]`` iff ``i`` dominates ``j`` (Deb's constrained domination with ``cv``)."""
    le = jnp.all(F[:, None, :] <= F[None, :, :], axis=-1)
    lt = jnp.any(F[:, None, :] < F[None, :, :], axis=-1)
    pareto = le & lt
    if cv is None:
        return pareto
    feas = cv <= 0
    return jnp.where(feas[:, None] & feas[None, :], pareto,
                     (feas[:, None] & ~feas[None, :]) | (~feas[:, None] & ~feas[None, :] & (cv[:, None] < cv[None, :])))


def ranks(F: jax.Array, cv: jax.Array | None = None) -> jax.Array:
    """Front index of every point (0: non-dominated), peeled one front at a time."""
    dom = dominance(F, cv)
    n = F.shape[0]

    def body(c):
        rank, count, r = c
        front = (rank < 0) & (count == 0)
        rank = jnp.where(front, r, rank)
        count = count - jnp.sum(dom & front[:, None], axis=0)
        return rank, count, r + 1

    rank, _, _ = lax.while_loop(lambda c: jnp.any(c[0] < 0), body,
                                (jnp.full(n, -1, jnp.int32), jnp.sum(dom, axis=0), jnp.zeros((), jnp.int32)))
    return rank


def crowding(F: jax.Array, rank: jax.Array) -> jax.Array:
    """pymoo's crowding distance (``calc_crowding_distance``) of every point within its front: per
    objective, the gap between its neighbours over the front's range (the extremes: infinite; an
    objective constant over the front adds 0), averaged over objectives; a front of at most two
    points is infinite. Ties in an objective are ordered by index."""
    n, m = F.shape
    idx = jnp.arange(n)
    seg = jnp.clip(rank, 0, n - 1)
    size = jax.ops.segment_sum(jnp.ones(n), seg, n)[seg]
    total = jnp.zeros(n)
    for j in range(m):  # objectives: a small static count
        f = F[:, j]
        order = jnp.lexsort((idx, f, rank))  # by front, then value, then index
        fs, rs = f[order], rank[order]
        same = rs[1:] == rs[:-1]
        to_last = jnp.where(jnp.concatenate([jnp.zeros(1, bool), same]), fs - jnp.concatenate([fs[:1], fs[:-1]]), jnp.inf)
        to_next = jnp.where(jnp.concatenate([same, jnp.zeros(1, bool)]), jnp.concatenate([fs[1:], fs[-1:]]) - fs, jnp.inf)
        norm = (jax.ops.segment_max(f, seg, n) - jax.ops.segment_min(f, seg, n))[seg[order]]
        d = jnp.where(norm > 0, (to_last + to_next) / jnp.where(norm > 0, norm, 1.0), 0.0)
        total = total.at[order].add(d)
    return jnp.where(size <= 2, jnp.inf, total / m)


# --------------------------------------------------------------------------- variation


def _tournament_pairs(key, n: int, n_select: int) -> jax.Array:
    """``[n_select, 2]`` competitors: concatenated random permutations, as pymoo draws them."""
    per = math.ceil(2 * n_select / n)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, per)).reshape(-1)
    return perms[: 2 * n_select].reshape(n_select, 2)


def _tournament(key, state, algo: NSGA, n_select: int) -> jax.Array:
    k_pairs, k_tie = jax.random.split(key)
    P = _tournament_pairs(k_pairs, state.X.shape[0], n_select)
    a, b = P[:, 0], P[:, 1]
    coin = jax.random.bernoulli(k_tie, 0.5, (n_select,))
    cva, cvb = state.cv[a], state.cv[b]
    infeasible = (cva > 0) | (cvb > 0)
    by_cv = jnp.where(cva < cvb, a, jnp.where(cvb < cva, b, jnp.where(coin, a, b)))
    if algo.algorithm == "nsga3":
        feasible_pick = jnp.where(coin, a, b)
    else:
        dom = dominance(state.F)
        ca, cb = state.crowd[a], state.crowd[b]
        by_crowd = jnp.where(ca > cb, a, jnp.where(cb > ca, b, jnp.where(coin, a, b)))
        feasible_pick = jnp.where(dom[a, b], a, jnp.where(dom[b, a], b, by_crowd))
    return jnp.where(infeasible, by_cv, feasible_pick)


def sbx(key, X1: jax.Array, X2: jax.Array, lo, hi, *, eta: float, prob: float, eps: float = 1e-14):
    """Simulated binary crossover of matings ``X1[i] × X2[i]`` (pymoo's ``cross_sbx``): two children each."""
    k_mate, k_var, k_rand, k_bin = jax.random.split(key, 4)
    nm, nv = X1.shape
    mate = jax.random.uniform(k_mate, (nm, 1)) < prob
    cross = (jax.random.uniform(k_var, (nm, nv)) < 0.5) & (jnp.abs(X1 - X2) > eps) & (lo != hi) & mate
    sm = X1 < X2
    y1, y2 = jnp.where(sm, X1, X2), jnp.where(sm, X2, X1)
    delta = jnp.where(cross, y2 - y1, 1.0)
    rand = jax.random.uniform(k_rand, (nm, nv))

    def betaq(beta):
        alpha = 2.0 - jnp.power(beta, -(eta + 1.0))
        return jnp.where(rand <= 1.0 / alpha, jnp.power(rand * alpha, 1.0 / (eta + 1.0)),
                         jnp.power(1.0 / (2.0 - rand * alpha), 1.0 / (eta + 1.0)))

    c1 = 0.5 * ((y1 + y2) - betaq(1.0 + 2.0 * (y1 - lo) / delta) * delta)
    c2 = 0.5 * ((y1 + y2) + betaq(1.0 + 2.0 * (hi - y2) / delta) * delta)
    ch1, ch2 = jnp.where(sm, c1, c2), jnp.where(sm, c2, c1)
    b = (jax.random.uniform(k_bin, (nm, nv)) < 0.5) ^ (X1 > X2)
    ch1, ch2 = jnp.where(b, ch2, ch1), jnp.where(b, ch1, ch2)
    Q1 = jnp.clip(jnp.where(cross, ch1, X1), lo, hi)
    Q2 = jnp.clip(jnp.where(cross, ch2, X2), lo, hi)
    return Q1, Q2


def polynomial_mutation(key, X: jax.Array, lo, hi, *, eta: float, prob: float) -> jax.Array:
    """pymoo's ``PM``: each individual with probability ``prob``, each of its variables with
    probability ``min(0.5, 1/n_var)``."""
    k_ind, k_var, k_rand = jax.random.split(key, 3)
    n, nv = X.shape
    mut = (jax.random.uniform(k_var, (n, nv)) < min(0.5, 1.0 / nv)) & (lo != hi)
    mut = mut & (jax.random.uniform(k_ind, (n, 1)) <= prob)
    width = jnp.where(hi > lo, hi - lo, 1.0)
    d1, d2 = (X - lo) / width, (hi - X) / width
    p = 1.0 / (eta + 1.0)
    rand = jax.random.uniform(k_rand, (n, nv))
    v1 = 2.0 * rand + (1.0 - 2.0 * rand) * jnp.power(1.0 - d1, eta + 1.0)
    v2 = 2.0 * (1.0 - rand) + 2.0 * (rand - 0.5) * jnp.power(1.0 - d2, eta + 1.0)
    dq = jnp.where(rand <= 0.5, jnp.power(v1, p) - 1.0, 1.0 - jnp.power(v2, p))
    return jnp.where(mut, jnp.clip(X + dq * width, lo, hi), X)


# --------------------------------------------------------------------------- survival


class State(NamedTuple):
    """A population and what its next survival needs (``ideal``/``worst``/``extreme``: NSGA-III's
    normalisation, carried across generations as pymoo does)."""

    X: jax.Array  # [n, d]
    F: jax.Array  # [n, m]
    cv: jax.Array  # [n] constraint violation (0: feasible)
    rank: jax.Array  # [n]
    crowd: jax.Array  # [n] NSGA-II crowding (NSGA-III: 0)
    ideal: jax.Array  # [m]
    worst: jax.Array  # [m]
    extreme: jax.Array  # [m, m]
    aux: jax.Array  # [n, a]: what the evaluation returned beside F and cv (kept with its individual)


def _finite(F):
    return jnp.where(jnp.isnan(F), jnp.inf, F)


def _take(X, F, cv, aux, rank, crowd, idx, s: State, **norm) -> State:
    return State(X[idx], F[idx], cv[idx], rank[idx], crowd[idx], norm.get("ideal", s.ideal), norm.get("worst", s.worst),
                 norm.get("extreme", s.extreme), aux[idx])


def _split_rank(rank, n):
    """The front at which the first ``n`` by rank are complete."""
    upto = jnp.sum(rank[None, :] <= jnp.arange(rank.shape[0])[:, None], axis=1)
    return jnp.argmax(upto >= n)


def survive_nsga2(key, X, F, cv, aux, n: int, s: State) -> State:
    rank = ranks(F, cv)
    crowd = crowding(F, rank)
    u = jax.random.uniform(key, (X.shape[0],))
    order = jnp.lexsort((u, -crowd, rank))
    return _take(X, F, cv, aux, rank, crowd, order[:n], s)


def normalisation(F, feas, nd, ideal, worst, extreme):
    """pymoo's ``HyperplaneNormalization.update`` on the feasible points ``feas`` with their first
    front ``nd``: returns ``(ideal, worst, extreme, nadir)``."""
    m = F.shape[1]
    any_feas = jnp.any(feas)
    ideal_n = jnp.minimum(ideal, jnp.min(jnp.where(feas[:, None], F, jnp.inf), axis=0))
    worst_n = jnp.maximum(worst, jnp.max(jnp.where(feas[:, None], F, -jnp.inf), axis=0))
    cand = jnp.concatenate([extreme, jnp.where(nd[:, None], F, jnp.inf)])
    shifted = cand - ideal_n
    shifted = jnp.where(shifted < 1e-3, 0.0, shifted)
    weights = jnp.where(jnp.eye(m, dtype=bool), 1.0, 1e6)
    asf = jnp.max(shifted[None, :, :] * weights[:, None, :], axis=2)  # [m, K]
    extreme_n = cand[jnp.argmin(asf, axis=1)]
    worst_pop = jnp.max(jnp.where(feas[:, None], F, -jnp.inf), axis=0)
    worst_front = jnp.max(jnp.where(nd[:, None], F, -jnp.inf), axis=0)
    M = extreme_n - ideal_n
    plane = jnp.linalg.solve(jnp.where(jnp.isfinite(M), M, 0.0), jnp.ones(m))
    intercepts = 1.0 / plane
    nadir = ideal_n + intercepts
    ok = (jnp.all(jnp.isfinite(M)) & jnp.all(jnp.isfinite(plane))
          & jnp.all(jnp.abs(M @ plane - 1.0) <= 1e-8 + 1e-5) & jnp.all(intercepts > 1e-6))
    nadir = jnp.where(ok, jnp.where(nadir > worst_n, worst_n, nadir), worst_front)
    nadir = jnp.where(nadir - ideal_n <= 1e-6, worst_pop, nadir)
    keep = lambda new, old: jnp.where(any_feas, new, old)  # noqa: E731 -- no feasible point: no update
    return keep(ideal_n, ideal), keep(worst_n, worst), keep(extreme_n, extreme), nadir


def associate(F, dirs, ideal, nadir):
    """Nearest reference direction of every point (perpendicular distance after normalisation)."""
    denom = nadir - ideal
    N = (F - ideal) / jnp.where(denom == 0, 1e-12, denom)
    u = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    proj = (N @ u.T)[:, :, None] * u[None, :, :]  # [n, H, m]
    dist = jnp.linalg.norm(proj - N[:, None, :], axis=-1)
    dist = jnp.where(jnp.isnan(dist), jnp.inf, dist)
    niche = jnp.argmin(dist, axis=1)
    return niche, jnp.take_along_axis(dist, niche[:, None], axis=1)[:, 0]


def survive_nsga3(key, X, F, cv, aux, n: int, s: State, dirs) -> State:
    H = dirs.shape[0]
    rank = ranks(F, cv)
    feas = cv <= 0
    ideal, worst, extreme, nadir = normalisation(F, feas, (rank == 0) & feas, s.ideal, s.worst, s.extreme)
    split = _split_rank(rank, n)
    before, last = rank < split, rank == split
    niche, dist = associate(F, dirs, ideal, nadir)
    count0 = jax.ops.segment_sum(before.astype(jnp.int32), niche, H)
    remaining = n - jnp.sum(before)

    def pick(i, c):
        chosen, count, k = c
        k, k1, k2 = jax.random.split(k, 3)
        avail = last & ~chosen
        has = jax.ops.segment_max(avail.astype(jnp.int32), niche, H) > 0
        j = jnp.argmin(jnp.where(has, count + 0.5 * jax.random.uniform(k1, (H,)), jnp.inf))
        cand = avail & (niche == j)
        score = jnp.where(count[j] == 0, dist, jax.random.uniform(k2, dist.shape))
        t = jnp.argmin(jnp.where(cand, score, jnp.inf))
        go = i < remaining
        return chosen.at[t].set(chosen[t] | go), count.at[j].add(go.astype(jnp.int32)), k

    chosen, _, _ = lax.fori_loop(0, n, pick, (jnp.zeros(X.shape[0], bool), count0, key))
    keep = before | chosen
    order = jnp.argsort(~keep, stable=True)[:n]
    return _take(X, F, cv, aux, rank, jnp.zeros(X.shape[0]), order, s, ideal=ideal, worst=worst, extreme=extreme)


# --------------------------------------------------------------------------- the loop


#: ``X [n, d] -> (F [n, m], cv [n], aux [n, a])``: objectives (minimised), constraint violation (0:
#: feasible) and anything else the caller wants kept with each survivor.
Evaluate = Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


def init(key, X0, evaluated: tuple, algo: NSGA, dirs=None) -> State:
    """The first population ``X0`` with its evaluation ``(F, cv, aux)``, ranked (pymoo's survival
    of the initial infill)."""
    F, cv, aux = evaluated
    F = _finite(F)
    m = F.shape[1]
    s = State(X0, F, cv, jnp.zeros(X0.shape[0], jnp.int32), jnp.zeros(X0.shape[0]), jnp.full(m, jnp.inf),
              jnp.full(m, -jnp.inf), jnp.full((m, m), jnp.inf), aux)
    return survive(key, X0, F, cv, aux, s, algo, dirs)


def survive(key, X, F, cv, aux, s: State, algo: NSGA, dirs=None) -> State:
    n = algo.population_size
    if algo.algorithm == "nsga2":
        return survive_nsga2(key, X, F, cv, aux, n, s)
    return survive_nsga3(key, X, F, cv, aux, n, s, jnp.asarray(dirs, F.dtype))


def _children(key, s: State, lo, hi, algo: NSGA) -> jax.Array:
    n = algo.population_size
    k_sel, k_x, k_m = jax.random.split(key, 3)
    parents = _tournament(k_sel, s, algo, n).reshape(n // 2, 2)
    c1, c2 = sbx(k_x, s.X[parents[:, 0]], s.X[parents[:, 1]], lo, hi, eta=algo.crossover_eta, prob=algo.crossover_prob)
    kids = jnp.stack([c1, c2], axis=1).reshape(n, -1)
    return polynomial_mutation(k_m, kids, lo, hi, eta=algo.eta_m, prob=algo.prob_m)


def offspring(key, s: State, lo, hi, algo: NSGA, tries: int = 3) -> jax.Array:
    """``population_size`` children (tournament, SBX, polynomial mutation), duplicates of a parent or
    of an earlier child replaced by fresh ones from up to ``tries`` rounds of mating (pymoo repeats
    mating until the offspring are unique; a child still duplicated after ``tries`` rounds stays)."""
    n = algo.population_size
    C = jnp.concatenate([_children(k, s, lo, hi, algo) for k in jax.random.split(key, tries)])
    eq_parent = jnp.any(jnp.all(C[:, None, :] == s.X[None, :, :], axis=-1), axis=1)
    idx = jnp.arange(C.shape[0])
    eq_earlier = jnp.any(jnp.all(C[:, None, :] == C[None, :, :], axis=-1) & (idx[None, :] < idx[:, None]), axis=1)
    order = jnp.argsort(eq_parent | eq_earlier, stable=True)
    return C[order[:n]]


def generation(key, s: State, evaluate: Evaluate, lo, hi, algo: NSGA, dirs=None) -> State:
    """One generation: children, their evaluation, survival of parents + children."""
    k_off, k_sur = jax.random.split(key)
    kids = offspring(k_off, s, lo, hi, algo)
    Fk, cvk, auxk = evaluate(kids)
    cat = lambda a, b: jnp.concatenate([a, b])  # noqa: E731
    return survive(k_sur, cat(s.X, kids), cat(s.F, _finite(Fk)), cat(s.cv, cvk), cat(s.aux, auxk), s, algo, dirs)


def minimize(fn: Callable, key, *, n_var: int, n_obj: int, generations: int, algo: NSGA, lo=0.0, hi=1.0,
             X0=None) -> State:
    """Runs ``algo`` for ``generations`` on ``fn: X [n, d] -> (F [n, m], cv [n])`` (traceable: wrap it
    in ``jax.jit``). The first population is ``X0`` or uniform in ``[lo, hi]``. Returns the final
    population; its rank-0 points are the front."""
    def evaluate(X):
        F, cv = fn(X)
        return F, cv, jnp.zeros((X.shape[0], 0))

    lo = jnp.broadcast_to(jnp.asarray(lo, jnp.float32), (n_var,))
    hi = jnp.broadcast_to(jnp.asarray(hi, jnp.float32), (n_var,))
    dirs = algo.directions(n_obj) if algo.algorithm == "nsga3" else None
    k0, k1, k2 = jax.random.split(key, 3)
    if X0 is None:
        X0 = lo + jax.random.uniform(k0, (algo.population_size, n_var)) * (hi - lo)
    s0 = init(k1, X0, evaluate(X0), algo, dirs)

    def step(s, k):
        return generation(k, s, evaluate, lo, hi, algo, dirs), None

    final, _ = lax.scan(step, s0, jax.random.split(k2, generations))
    return final


# --------------------------------------------------------------------------- benchmark problems


def _zdt(k: int):
    def f(X):
        f1 = X[:, 0]
        g = 1 + 9 * jnp.mean(X[:, 1:], axis=1)
        r = f1 / g
        h = {1: 1 - jnp.sqrt(r), 2: 1 - r ** 2, 3: 1 - jnp.sqrt(r) - r * jnp.sin(10 * jnp.pi * f1)}[k]
        return jnp.stack([f1, g * h], 1), jnp.zeros(X.shape[0])
    return f


def _dtlz2(X):
    g = jnp.sum((X[:, 2:] - 0.5) ** 2, axis=1)
    t = X[:, :2] * jnp.pi / 2
    return jnp.stack([(1 + g) * jnp.cos(t[:, 0]) * jnp.cos(t[:, 1]), (1 + g) * jnp.cos(t[:, 0]) * jnp.sin(t[:, 1]),
                      (1 + g) * jnp.sin(t[:, 0])], 1), jnp.zeros(X.shape[0])


#: Standard test problems in the unit box, as pymoo defines them (``get_problem(name)``: ZDT with 30
#: variables, DTLZ2 with 10 variables and 3 objectives): name -> ``(fn, n_var, n_obj)``.
TEST_PROBLEMS = {"zdt1": (_zdt(1), 30, 2), "zdt2": (_zdt(2), 30, 2), "zdt3": (_zdt(3), 30, 2), "dtlz2": (_dtlz2, 10, 3)}
