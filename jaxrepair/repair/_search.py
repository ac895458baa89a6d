"""Population-based search (evosax) for a repair, as one compiled program.

The search runs in normalised coordinates ``z ∈ [0, 1]^D`` (``x = low + z·(high − low)``), so every
strategy sees a unit box whatever the space's bounds; populations are clipped to the box after
every ``ask`` (bounds enforced). One generation is one ``vmap`` of the objective over the
population; the generations are a ``lax.scan`` under ``jit``; a generation after the early stop is
skipped by ``lax.cond`` (its history entry repeats the last values).

Selection: after every generation the best-so-far solution on the *repair* split is scored on the
*select* split, and the result is the solution with the best select fitness (the unrepaired model
is the first candidate, so a search that only overfits returns "no change").
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
import optax
from jax import lax

TRACE_COUNT: Counter = Counter()

_CARE_PSO = (("inertia_coeff", 0.8), ("cognitive_coeff", 0.41), ("social_coeff", 0.41))


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A named evosax strategy with its budget and early stop. ``settings`` override evosax params."""

    name: str
    population_size: int = 20
    generations: int = 100
    patience: int = 10  # early stop: generations whose best improved by less than ``tol``
    tol: float = 1e-3
    settings: tuple = ()
    sigma: float = 0.2  # initial std (distribution-based), in units of the box side
    # Particles evaluated at once: 0 = the whole population in one vmap (accelerators), k = vmapped
    # chunks of k inside one lax.map, -1 = auto (0 on GPU/TPU; 1 on CPU, where 20 particles' activations
    # overflow the cache and one vmap measured 2x slower than chunks: `jaxrepair bench repair`).
    particle_chunk: int = -1

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "settings": dict(self.settings)}


STRATEGIES = {
    # PSO's defaults are CARE's (ICSE 2022): 20 particles, 100 iterations, w=0.8, c1=c2=0.41.
    "pso": Strategy("pso", settings=_CARE_PSO),
    "cma_es": Strategy("cma_es"),
    "de": Strategy("de"),
    "snes": Strategy("snes"),
    "open_es": Strategy("open_es"),
}
PRESETS = {"care": STRATEGIES["pso"]}


def get_strategy(strategy: "str | Strategy", **overrides) -> Strategy:
    if isinstance(strategy, Strategy):
        s = strategy
    elif strategy in PRESETS:
        s = PRESETS[strategy]
    elif strategy in STRATEGIES:
        s = STRATEGIES[strategy]
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)} or preset {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "settings" in overrides and isinstance(overrides["settings"], dict):
        overrides["settings"] = tuple(sorted(overrides["settings"].items()))
    s = dataclasses.replace(s, **overrides)
    if s.population_size < 4 or (s.name == "open_es" and s.population_size % 2):
        raise ValueError(f"{s.name} needs a population of at least 4 (even for open_es), got {s.population_size}")
    if s.generations < 1:
        raise ValueError(f"generations must be at least 1, got {s.generations}")
    return s


def _algorithm(s: Strategy, num_dims: int):
    import evosax.algorithms as ea

    sol = jnp.zeros(num_dims)
    n = s.population_size
    population_based = s.name in ("pso", "de")
    if s.name == "pso":
        algo = ea.PSO(n, sol)
    elif s.name == "de":
        algo = ea.DifferentialEvolution(n, sol)
    elif s.name == "cma_es":
        algo = ea.CMA_ES(n, sol)
    elif s.name == "snes":
        algo = ea.SNES(n, sol)
    elif s.name == "open_es":
        algo = ea.Open_ES(n, sol, optimizer=optax.adam(0.05), std_schedule=optax.constant_schedule(s.sigma / 2))
    else:
        raise ValueError(f"unknown strategy {s.name!r}")
    p = algo.default_params
    if hasattr(p, "std_init"):
        p = p.replace(std_init=jnp.asarray(s.sigma))
    settings = dict(s.settings)
    unknown = [k for k in settings if not hasattr(p, k)]
    if unknown:
        raise ValueError(f"{s.name} has no setting(s) {unknown}; its settings are {sorted(vars(p))}")
    return algo, p.replace(**settings), population_based


_PROGRESS = {"t0": 0.0, "every": 10}


def _print_progress(gen, best, sel, total):
    gen, total = int(jnp.max(gen)), int(total)
    if gen % _PROGRESS["every"] and gen != total:
        return
    el = time.perf_counter() - _PROGRESS["t0"]
    eta = el / max(gen, 1) * (total - gen)
    print(f"[search] generation {gen}/{total} best fitness {float(jnp.min(best)):.4f}"
          f" select {float(jnp.min(sel)):.4f} elapsed {el:.1f}s ETA {eta:.1f}s", file=sys.stderr, flush=True)


#: Fitness added per unit of accuracy lost beyond the budget (100 → 1.0 per point over): larger than
#: any violation/accuracy trade-off the objective can offer, so the budget acts as a constraint.
BUDGET_PENALTY = 100.0


def search_core(params, data_r, data_s, key, a, max_drop=jnp.inf, *, apply, space, objective, strategy: Strategy,
                progress=False, mesh=None):
    """One whole search (traceable: vmap it over ``key`` and ``a`` for a Pareto front).

    ``max_drop``: accuracy budget. A solution whose accuracy on a split falls more than ``max_drop``
    below the unrepaired model's on that split pays :data:`BUDGET_PENALTY` per unit over — during
    the search (repair split) and when candidates are chosen (select split). ``inf``: no budget.
    """
    TRACE_COUNT["search"] += 1
    lo, hi = space.bounds(params)
    width = jnp.where(hi > lo, hi - lo, 1.0)

    def to_x(z):
        return lo + jnp.clip(z, 0.0, 1.0) * (hi - lo)

    # Everything a fitness evaluation reads, passed explicitly (shard_map bodies take no closures).
    def make_fit(ctx):
        params_, data_r_, data_s_, a_, md_, lo_, hi_, acc0_ = ctx

        def raw(z, data):
            p, iv = space.realize(params_, lo_ + jnp.clip(z, 0.0, 1.0) * (hi_ - lo_))
            return objective.fitness(lambda q, x: apply(q, x, iv), p, data, a_)

        def fit(z, split):
            f, v, acc = raw(z, data_r_ if split == "r" else data_s_)
            ref = acc0_[0] if split == "r" else acc0_[1]
            return f + BUDGET_PENALTY * jnp.maximum(0.0, ref - acc - md_), v, acc

        return raw, fit

    z_id = jnp.clip((space.identity(params) - lo) / width, 0.0, 1.0)
    raw_fit, _ = make_fit((params, data_r, data_s, a, max_drop, lo, hi, jnp.zeros(2)))
    acc0 = jnp.stack([raw_fit(z_id, data_r)[2], raw_fit(z_id, data_s)[2]])
    ctx = (params, data_r, data_s, a, max_drop, lo, hi, acc0)
    _, fit = make_fit(ctx)

    chunk = strategy.particle_chunk if strategy.particle_chunk >= 0 else (1 if jax.default_backend() == "cpu" else 0)

    def local_fit(pop, c):
        f = make_fit(c)[1]
        if chunk and chunk < pop.shape[0]:
            # vmapped chunks inside one lax.map: bounds activation memory (cache-friendlier on CPU)
            return lax.map(lambda z: f(z, "r"), pop, batch_size=chunk)
        return jax.vmap(lambda z: f(z, "r"))(pop)

    if mesh is None:
        def pop_fit(pop):
            return local_fit(pop, ctx)
    else:
        # the population split over the mesh axis "pop" (padded to a multiple of its size)
        from jax.sharding import PartitionSpec as P

        n_dev = mesh.shape["pop"]
        sharded = jax.shard_map(local_fit, mesh=mesh, in_specs=(P("pop"), P()), out_specs=P("pop"), check_vma=False)

        def pop_fit(pop):
            n = pop.shape[0]
            pad = (-n) % n_dev
            padded = jnp.concatenate([pop, jnp.repeat(pop[:1], pad, axis=0)]) if pad else pop
            return jax.tree.map(lambda v: v[:n], sharded(padded, ctx))
    z0 = z_id
    algo, ap, population_based = _algorithm(strategy, z0.shape[0])
    k_init, k_pop, k_run = jax.random.split(key, 3)
    if population_based:
        pop0 = jax.random.uniform(k_pop, (strategy.population_size, z0.shape[0])).at[0].set(z0)
        f0, _, _ = pop_fit(pop0)
        state = algo.init(k_init, pop0, f0, ap)
        i0 = jnp.argmin(f0)
        best_z, best_f = pop0[i0], f0[i0]
    else:
        state = algo.init(k_init, z0, ap)
        best_z, best_f = z0, fit(z0, "r")[0]
    sel_f0, sel_v0, sel_a0 = fit(z0, "s")
    init_evals = strategy.population_size if population_based else 1
    carry0 = dict(state=state, best_z=best_z, best_f=best_f, sel_z=z0, sel_f=sel_f0, sel_v=sel_v0, sel_acc=sel_a0,
                  ref_f=best_f, stall=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool), gens=jnp.zeros((), jnp.int32))

    def run(c, k):
        ka, kt = jax.random.split(k)
        pop, st = algo.ask(ka, c["state"], ap)
        pop = jnp.clip(pop, 0.0, 1.0)
        f, v, acc = pop_fit(pop)
        st, _ = algo.tell(kt, pop, f, st, ap)
        i = jnp.argmin(f)
        improved = f[i] < c["best_f"]
        best_z = jnp.where(improved, pop[i], c["best_z"])
        best_f = jnp.minimum(f[i], c["best_f"])
        fs, vs, accs = fit(best_z, "s")
        better = fs < c["sel_f"]
        gain = best_f < c["ref_f"] - strategy.tol
        stall = jnp.where(gain, 0, c["stall"] + 1)
        gens = c["gens"] + 1
        new = dict(
            state=st, best_z=best_z, best_f=best_f,
            sel_z=jnp.where(better, best_z, c["sel_z"]), sel_f=jnp.where(better, fs, c["sel_f"]),
            sel_v=jnp.where(better, vs, c["sel_v"]), sel_acc=jnp.where(better, accs, c["sel_acc"]),
            ref_f=jnp.where(gain, best_f, c["ref_f"]), stall=stall, done=stall >= strategy.patience, gens=gens,
        )
        if progress:
            jax.debug.callback(_print_progress, gens, best_f, new["sel_f"], strategy.generations)
        hist = dict(best=best_f, mean=jnp.mean(jnp.where(jnp.isfinite(f), f, jnp.nan)), select=new["sel_f"],
                    violation=v[i], accuracy=acc[i])
        return new, hist

    def skip(c, k):
        nan = jnp.full((), jnp.nan)
        return c, dict(best=c["best_f"], mean=nan, select=c["sel_f"], violation=nan, accuracy=nan)

    def step(c, k):
        return lax.cond(c["done"], skip, run, c, k)

    final, hist = lax.scan(step, carry0, jax.random.split(k_run, strategy.generations))
    return {
        "solution": to_x(final["sel_z"]),
        "select_fitness": final["sel_f"],
        "select_violation": final["sel_v"],
        "select_accuracy": final["sel_acc"],
        "repair_best_fitness": final["best_f"],
        "generations_run": final["gens"],
        "evaluations": init_evals + final["gens"] * strategy.population_size,
        "identity_select_fitness": sel_f0,
        "history": hist,
    }


_search = jax.jit(search_core, static_argnames=("apply", "space", "objective", "strategy", "progress", "mesh"))


def _pareto_core(params, data_r, data_s, keys, a_values, max_drop, **kw):
    return jax.vmap(lambda k, a: search_core(params, data_r, data_s, k, a, max_drop, **kw))(keys, a_values)


_pareto = jax.jit(_pareto_core, static_argnames=("apply", "space", "objective", "strategy", "progress", "mesh"))


def _budget(max_drop):
    return jnp.asarray(jnp.inf if max_drop is None else max_drop, jnp.float32)


def population_mesh(devices=None):
    """The mesh repair shards its population over (axis ``pop``), or None for a single device."""
    from jaxrepair import distributed

    devs = distributed.devices(devices)
    return distributed.make_mesh({"pop": len(devs)}, devs) if len(devs) > 1 else None


def _place(mesh, *trees):
    if mesh is None:
        return trees
    from jaxrepair import distributed

    return tuple(distributed.put_tree(jax.device_get(t), mesh) for t in trees)


def _fetch(mesh, out):
    if mesh is None:
        return out
    from jaxrepair import distributed

    return jax.tree.map(distributed.gather, out)


def _run(program, params, data_r, data_s, keys, a, max_drop, mesh, **static):
    """Places the inputs on ``mesh`` (keys as raw data), runs the compiled program, gathers the output."""
    _PROGRESS["t0"] = time.perf_counter()
    params, data_r, data_s, key_data, a, md = _place(mesh, params, data_r, data_s, jax.random.key_data(keys),
                                                     jnp.asarray(a, jnp.float32), _budget(max_drop))
    return _fetch(mesh, program(params, data_r, data_s, jax.random.wrap_key_data(key_data), a, md, mesh=mesh, **static))


def run_search(params, data_r, data_s, key, a, *, apply, space, objective, strategy, progress=False, max_drop=None,
               mesh=None):
    return _run(_search, params, data_r, data_s, key, a, max_drop, mesh, apply=apply, space=space, objective=objective,
                strategy=strategy, progress=progress)


def run_pareto(params, data_r, data_s, keys, a_values, *, apply, space, objective, strategy, progress=False,
               max_drop=None, mesh=None):
    return _run(_pareto, params, data_r, data_s, keys, a_values, max_drop, mesh, apply=apply, space=space,
                objective=objective, strategy=strategy, progress=progress)


def non_dominated(accuracy, violation) -> list[int]:
    """Indices of the points no other point beats (accuracy ≥ and violation ≤, one strictly)."""
    pts = list(zip(accuracy, violation))
    keep = []
    for i, (ai, vi) in enumerate(pts):
        dominated = any((aj >= ai and vj <= vi) and (aj > ai or vj < vi) for j, (aj, vj) in enumerate(pts) if j != i)
        if not dominated:
            keep.append(i)
    return keep
