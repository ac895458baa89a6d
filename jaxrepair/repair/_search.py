"""Population-based search (evosax) for a repair, as one compiled program.

The search runs in normalised coordinates ``z ∈ [0, 1]^D`` (``x = low + z·(high − low)``), so every
strategy sees a unit box whatever the space's bounds; populations are clipped to the box after
every ``ask`` (bounds enforced). One generation is one ``vmap`` of the objective over the
population; the generations are a ``lax.scan`` under ``jit``; a generation after the early stop is
skipped by ``lax.cond`` (its history entry repeats the last values).

Selection: after every generation the best-so-far solution on the *repair* split is scored on the
*select* split, and the result is the solution with the best select fitness (the unrepaired model
is the first candidate, so a search that only overfits returns "no change").

What is static (compiled once): the space (graph, candidate sites, ``k_max``), the strategy and the
objective's structure. Everything else is data: the selected neurons, bounds, params and batch
statistics, the data splits, the property's numbers (sensitive column, target class), and per run
the key, ``a`` and ``max_drop`` — :func:`program` vmaps over runs.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxrepair import models
from jaxrepair.records import Progress, did_you_mean
from jaxrepair.repair import _nsga
from jaxrepair.repair._front import non_dominated_mask

#: Traces of the search program; tests assert that it stays put.
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
    relative_tol: bool = False  # stop threshold tol·(1 + |best|), as pyswarms' ftol
    # NSGA-II/III only: what is minimised (see OBJECTIVES); the accuracy budget is their constraint
    objectives: tuple = ("violation", "accuracy_loss")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "settings": dict(self.settings), "objectives": list(self.objectives)}

    @property
    def multi_objective(self) -> bool:
        return self.name in _nsga.ALGORITHMS


STRATEGIES = {
    # CARE's (ICSE 2022) search: pyswarms' global-best PSO, 20 particles, 100 iterations, w=0.8,
    # c1=c2=0.41, early stop after 10 iterations improving by < 1e-3·(1 + |best|).
    "care": Strategy("care", relative_tol=True),
    # evosax's PSO with CARE's coefficients.
    "pso": Strategy("pso", settings=_CARE_PSO),
    "cma_es": Strategy("cma_es"),
    "de": Strategy("de"),
    "snes": Strategy("snes"),
    "open_es": Strategy("open_es"),
    # NSGA-II / NSGA-III (pymoo's operators, _nsga.py): 64 individuals × 100 generations, no early stop.
    "nsga2": Strategy("nsga2", population_size=64, generations=100),
    "nsga3": Strategy("nsga3", population_size=64, generations=100),
}

#: What a multi-objective search can minimise: the violation rate, the accuracy lost against the
#: unrepaired model (for a safety task, whose accuracy is agreement with the original advisories:
#: the drawdown), and the share of the selected units whose values move off the unrepaired network's
#: by more than 1% of their range (how much of the network changes).
OBJECTIVES = ("violation", "accuracy_loss", "drawdown", "changed")


def get_strategy(strategy: "str | Strategy", **overrides) -> Strategy:
    """A :class:`Strategy` by name (``care``, ``pso``, ``cma_es``, ``de``, ``snes``, ``open_es``, ``nsga2``,
    ``nsga3``) with overrides, checked (NSGA: its objectives, settings and reference directions)."""
    if isinstance(strategy, Strategy):
        s = strategy
    elif strategy in STRATEGIES:
        s = STRATEGIES[strategy]
    else:
        raise ValueError(f"unknown strategy {strategy!r}{did_you_mean(strategy, STRATEGIES)} (choose one of {sorted(STRATEGIES)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "settings" in overrides and isinstance(overrides["settings"], dict):
        overrides["settings"] = tuple(sorted(overrides["settings"].items()))
    if "objectives" in overrides:
        overrides["objectives"] = tuple(overrides["objectives"])
    s = dataclasses.replace(s, **overrides)
    if s.multi_objective:
        check_objectives(s.objectives)
        _nsga_config(s, len(s.objectives))  # checks the settings and the reference directions
    if s.population_size < 4 or (s.name == "open_es" and s.population_size % 2):
        raise ValueError(f"{s.name} needs a population of at least 4 (even for open_es), got {s.population_size}")
    if s.generations < 1:
        raise ValueError(f"generations must be at least 1, got {s.generations}")
    return s


def check_objectives(objectives) -> tuple:
    """The objective names, checked: known, at least two, no repeats, not both accuracy_loss and drawdown."""
    objectives = tuple(objectives)
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise ValueError(f"unknown objective(s) {bad}; a multi-objective search minimises some of {OBJECTIVES}")
    if len(objectives) < 2 or len(set(objectives)) != len(objectives):
        raise ValueError(f"a multi-objective search needs at least two distinct objectives, got {list(objectives)}")
    if {"accuracy_loss", "drawdown"} <= set(objectives):
        raise ValueError("accuracy_loss and drawdown are the same objective (drawdown is a safety task's accuracy "
                         "loss); name one")
    return objectives


def _nsga_config(s: Strategy, n_obj: int) -> _nsga.NSGA:
    settings = dict(s.settings)
    fields = [f.name for f in dataclasses.fields(_nsga.NSGA) if f.name not in ("algorithm", "population_size")]
    unknown = [k for k in settings if k not in fields]
    if unknown:
        raise ValueError(f"{s.name} has no setting(s) {unknown}; its settings are {fields}")
    algo = _nsga.NSGA(s.name, s.population_size, **settings)
    if algo.algorithm == "nsga3":
        algo.directions(n_obj)
    return algo


def _algorithm(s: Strategy, num_dims: int):
    import evosax.algorithms as ea

    sol = jnp.zeros(num_dims)
    n = s.population_size
    population_based = s.name in ("pso", "de", "care")
    if s.name == "care":
        from jaxrepair.repair._pyswarms import PySwarmsPSO

        algo = PySwarmsPSO(n, num_dims)
    elif s.name == "pso":
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
    if "std_init" in p.__dataclass_fields__:
        p = p.replace(std_init=jnp.asarray(s.sigma))
    settings = dict(s.settings)
    unknown = [k for k in settings if k not in p.__dataclass_fields__]
    if unknown:
        raise ValueError(f"{s.name} has no setting(s) {unknown}; its settings are {sorted(p.__dataclass_fields__)}")
    return algo, p.replace(**settings), population_based


_PROGRESS = {"bar": None}  # the running program's progress display (host side of a debug callback)


def _print_progress(gen, best, sel, total):
    bar = _PROGRESS["bar"]
    if bar is not None:
        bar.update(int(jnp.max(gen)), f"generations, best fitness {float(jnp.min(best)):.4f} select "
                                      f"{float(jnp.min(sel)):.4f}")


#: Fitness added per unit of accuracy lost beyond the budget (100 → 1.0 per point over): larger than
#: any violation/accuracy trade-off the objective can offer, so the budget acts as a constraint.
BUDGET_PENALTY = 100.0


class Spec(NamedTuple):
    """The static part of a search program (hashable)."""

    space: object  # a Space
    strategy: Strategy
    objective: object  # the objective's static part (see Objective.split)
    init: str = "random"  # "random": uniform swarm with the unrepaired model in it; "identity": all start unrepaired


class Args(NamedTuple):
    """The traced part shared by every run of a program."""

    params: dict  # trainable parameters
    stats: dict  # batch statistics (never searched)
    data_r: dict  # repair split {"property", "accuracy"}
    data_s: dict  # select split
    objective: object  # the objective's numbers (sensitive column, target class, ...)


class Run(NamedTuple):
    """What differs between runs of one program (a leading axis when vmapped)."""

    seed: jax.Array  # int32: the run's key is fold_in(key(seed), 1)
    a: jax.Array
    max_drop: jax.Array
    lo: jax.Array  # [D]
    hi: jax.Array  # [D]
    slots: object  # Slots: the selected neurons ([k_max] site and unit indices)


class _Fitness(NamedTuple):
    fit: Callable  # (z, split "r" | "s") -> (penalised fitness, violation, accuracy)
    pop_fit: Callable  # z [n, D] -> the same on the repair split, vmapped (sharded over ``mesh``)
    z_id: jax.Array  # the unrepaired network in box coordinates
    to_x: Callable  # box coordinates -> the space's values
    acc0: jax.Array  # [2] the unrepaired accuracy on the repair and select splits


def _fitness(spec: Spec, args: Args, run: Run, mesh=None) -> _Fitness:
    """The run's fitness on the repair and select splits, in box coordinates ``z ∈ [0, 1]^D``."""
    space, strategy = spec.space, spec.strategy
    objective = spec.objective.join(args.objective)
    apply = models.Apply(space.graph)
    lo, hi = run.lo, run.hi
    width = jnp.where(hi > lo, hi - lo, 1.0)

    def to_x(z):
        return lo + jnp.clip(z, 0.0, 1.0) * (hi - lo)

    # Everything a fitness evaluation reads, passed explicitly (shard_map bodies take no closures).
    def make_fit(ctx):
        params_, stats_, slots_, data_r_, data_s_, a_, md_, lo_, hi_, acc0_ = ctx

        def raw(z, data):
            p, iv = space.realize(params_, slots_, lo_ + jnp.clip(z, 0.0, 1.0) * (hi_ - lo_))
            full = models.merge(p, stats_)
            return objective.fitness(lambda q, x: apply(q, x, iv), full, data, a_)

        def fit(z, split):
            f, v, acc = raw(z, data_r_ if split == "r" else data_s_)
            ref = acc0_[0] if split == "r" else acc0_[1]
            return f + BUDGET_PENALTY * jnp.maximum(0.0, ref - acc - md_), v, acc

        return raw, fit

    z_id = jnp.clip((jnp.asarray(space.identity()) - lo) / width, 0.0, 1.0)
    # the unrepaired model's accuracy on both splits: the reference of the accuracy budget
    unrepaired = models.merge(args.params, args.stats)
    acc0 = jnp.stack([objective.accuracy(apply, unrepaired, args.data_r), objective.accuracy(apply, unrepaired, args.data_s)])
    ctx = (args.params, args.stats, run.slots, args.data_r, args.data_s, run.a, run.max_drop, lo, hi, acc0)
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

    return _Fitness(fit, pop_fit, z_id, to_x, acc0)


def search_core(spec: Spec, args: Args, run: Run, *, progress=False, mesh=None):
    """One whole search (traceable). Returns the chosen solution and the search record."""
    TRACE_COUNT["search"] += 1
    if spec.strategy.multi_objective:
        return moo_core(spec, args, run, progress=progress, mesh=mesh)
    strategy = spec.strategy
    fit, pop_fit, z_id, to_x, _ = _fitness(spec, args, run, mesh)
    z0 = z_id
    n, d = strategy.population_size, z0.shape[0]
    algo, ap, population_based = _algorithm(strategy, d)
    key = jax.random.fold_in(jax.random.key(run.seed), 1)
    k_init, k_pop, k_run = jax.random.split(key, 3)
    if population_based:
        if spec.init == "identity":
            pop0 = jnp.broadcast_to(z0, (n, d))
        else:
            pop0 = jax.random.uniform(k_pop, (n, d)).at[0].set(z0)
        state0 = algo.init(k_init, pop0, jnp.zeros(n), ap)  # re-initialised with the fitness in iteration 0
    else:
        pop0 = jnp.broadcast_to(z0, (n, d))
        state0 = algo.init(k_init, z0, ap)
    init_evals = n if population_based else 1
    inf = jnp.full((), jnp.inf)
    carry0 = dict(state=state0, best_z=z0, best_f=inf, sel_z=z0, sel_f=inf, sel_v=inf, sel_acc=-inf, ref_f=inf,
                  stall=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool), gens=jnp.zeros((), jnp.int32),
                  first=jnp.ones((), bool))

    # Iteration 0 evaluates the initial population and the unrepaired model on the select split;
    # iterations 1..G are the generations. The fitness appears once per split in the program.
    def generation(c, k):
        ka, kt = jax.random.split(k)
        first = c["first"]
        pop, st = lax.cond(first, lambda: (pop0, c["state"]), lambda: algo.ask(ka, c["state"], ap))
        pop = jnp.clip(pop, 0.0, 1.0)
        f, v, acc = pop_fit(pop)
        if population_based:
            st = lax.cond(first, lambda: algo.init(k_init, pop, f, ap), lambda: algo.tell(kt, pop, f, st, ap)[0])
        else:
            st = lax.cond(first, lambda: st, lambda: algo.tell(kt, pop, f, st, ap)[0])
        i = jnp.argmin(f)
        improved = f[i] < c["best_f"]
        best_z = jnp.where(improved, pop[i], c["best_z"])
        best_f = jnp.minimum(f[i], c["best_f"])
        fs, vs, accs = fit(jnp.where(first, z0, best_z), "s")
        better = first | (fs < c["sel_f"])
        tol = strategy.tol * (1.0 + jnp.abs(c["ref_f"])) if strategy.relative_tol else strategy.tol
        gain = first | (best_f < c["ref_f"] - tol)
        stall = jnp.where(gain, 0, c["stall"] + 1)
        gens = c["gens"] + jnp.where(first, 0, 1)
        new = dict(
            state=st, best_z=best_z, best_f=best_f,
            sel_z=jnp.where(better, jnp.where(first, z0, best_z), c["sel_z"]), sel_f=jnp.where(better, fs, c["sel_f"]),
            sel_v=jnp.where(better, vs, c["sel_v"]), sel_acc=jnp.where(better, accs, c["sel_acc"]),
            ref_f=jnp.where(gain, best_f, c["ref_f"]), stall=stall, done=stall >= strategy.patience, gens=gens,
            first=jnp.zeros((), bool),
        )
        if progress:
            jax.debug.callback(_print_progress, gens, best_f, new["sel_f"], strategy.generations)
        hist = dict(best=best_f, mean=jnp.mean(jnp.where(jnp.isfinite(f), f, jnp.nan)), select=new["sel_f"],
                    violation=v[i], accuracy=acc[i], identity_select=jnp.where(first, fs, jnp.nan))
        return new, hist

    def skip(c, k):
        nan = jnp.full((), jnp.nan)
        return c, dict(best=c["best_f"], mean=nan, select=c["sel_f"], violation=nan, accuracy=nan, identity_select=nan)

    def step(c, k):
        return lax.cond(c["done"], skip, generation, c, k)

    keys = jax.random.split(k_run, strategy.generations)
    final, hist = lax.scan(step, carry0, jnp.concatenate([keys[:1], keys]))
    sel_f0 = hist.pop("identity_select")[0]
    hist = jax.tree.map(lambda h: h[1:], hist)
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


#: A selected unit counts as changed (the ``changed`` objective: the share of the selected units
#: changed) when one of its searched values moves off the unrepaired network's by more than this share
#: of its range.
CHANGED_TOL = 0.01


def moo_core(spec: Spec, args: Args, run: Run, *, progress=False, mesh=None):
    """NSGA-II / NSGA-III over the repair (traceable; :mod:`jaxrepair.repair._nsga`).

    The objectives (``strategy.objectives``) are measured on the repair split; the accuracy budget
    is a constraint (violation ``max(0, acc0 − acc − max_drop)``, constrained domination). The first
    population is uniform in the box with the unrepaired network in it. After the last generation
    every individual of the final population is scored on the select split, and the solution
    returned is the one (or the unrepaired network) with the best select fitness
    ``(1−a)·violation + a·(1−accuracy)`` with the budget penalty — the choice every other strategy
    makes — while ``front`` keeps the whole final population with its objectives on both splits."""
    strategy = spec.strategy
    fx = _fitness(spec, args, run, mesh)
    names = strategy.objectives
    algo = _nsga_config(strategy, len(names))
    dirs = algo.directions(len(names)) if algo.algorithm == "nsga3" else None
    active = run.hi > run.lo
    n, d = algo.population_size, fx.z_id.shape[0]

    per_slot = spec.space.slot_dims  # the values of one selected unit (a factor, or a unit's weight deltas)
    slot_on = jnp.any(active.reshape(-1, per_slot), axis=1)

    def objectives(Z, v, acc, acc_ref):
        moved = ((jnp.abs(Z - fx.z_id) > CHANGED_TOL) & active).reshape(Z.shape[0], -1, per_slot)
        changed = jnp.sum(jnp.any(moved, axis=2), axis=1) / jnp.maximum(jnp.sum(slot_on), 1)
        cols = {"violation": v, "accuracy_loss": acc_ref - acc, "drawdown": acc_ref - acc, "changed": changed}
        return jnp.stack([cols[o] for o in names], axis=1)

    def evaluate(Z):
        Z = jnp.where(active, Z, fx.z_id)
        f, v, acc = fx.pop_fit(Z)
        cv = jnp.maximum(0.0, fx.acc0[0] - acc - run.max_drop)
        return objectives(Z, v, acc, fx.acc0[0]), cv, jnp.stack([f, v, acc], axis=1)

    key = jax.random.fold_in(jax.random.key(run.seed), 1)
    k_pop, k_init, k_run = jax.random.split(key, 3)
    Z0 = jax.random.uniform(k_pop, (n, d)).at[0].set(fx.z_id)
    s0 = _nsga.init(k_init, Z0, evaluate(Z0), algo, dirs)

    def step(st, ki):
        k, gen = ki
        new = _nsga.generation(k, st, evaluate, jnp.zeros(d), jnp.ones(d), algo, dirs)
        f, v, acc = new.aux[:, 0], new.aux[:, 1], new.aux[:, 2]  # the survivors' scalar fitness
        i = jnp.argmin(f)
        fs, _, _ = fx.fit(new.X[i], "s")
        if progress:
            jax.debug.callback(_print_progress, gen, f[i], fs, strategy.generations)
        return new, dict(best=f[i], mean=jnp.mean(jnp.where(jnp.isfinite(f), f, jnp.nan)), select=fs,
                         violation=v[i], accuracy=acc[i])

    keys = jax.random.split(k_run, strategy.generations)
    final, hist = lax.scan(step, s0, (keys, jnp.arange(1, strategy.generations + 1)))
    best_f = jnp.minimum(jnp.min(s0.aux[:, 0]), jnp.min(hist["best"]))
    Zf = final.X
    fs, vs, accs = lax.map(lambda z: fx.fit(z, "s"), jnp.concatenate([fx.z_id[None], Zf]), batch_size=8)
    j = jnp.argmin(fs)
    z_best = jnp.concatenate([fx.z_id[None], Zf])[j]
    return {
        "solution": fx.to_x(z_best),
        "select_fitness": fs[j],
        "select_violation": vs[j],
        "select_accuracy": accs[j],
        "repair_best_fitness": best_f,
        "generations_run": jnp.asarray(strategy.generations, jnp.int32),
        "evaluations": jnp.asarray(n * (strategy.generations + 1), jnp.int32),
        "identity_select_fitness": fs[0],
        "history": hist,
        "front": {"solution": jax.vmap(fx.to_x)(Zf), "objectives": final.F, "constraint": final.cv, "rank": final.rank,
                  "select_objectives": objectives(Zf, vs[1:], accs[1:], fx.acc0[1]),
                  "select_violation": vs[1:], "select_accuracy": accs[1:]},
    }


def _runs(spec, args, runs, *, progress=False, mesh=None):
    if runs.seed.shape[0] == 1:  # one run: no vmap (batching the scan costs as much tracing as the scan itself)
        out = search_core(spec, args, jax.tree.map(lambda v: v[0], runs), progress=progress, mesh=mesh)
        return jax.tree.map(lambda v: v[None], out)
    return jax.vmap(lambda r: search_core(spec, args, r, progress=progress, mesh=mesh))(runs)


#: The one search program: ``(spec, args, runs) -> outputs with a leading run axis``.
program = jax.jit(_runs, static_argnames=("spec", "progress", "mesh"))


def budget(max_drop) -> jax.Array:
    """The accuracy budget as data (``None``: no budget)."""
    return jnp.asarray(jnp.inf if max_drop is None else max_drop, jnp.float32)


def population_mesh(devices=None):
    """The mesh repair shards its population over (axis ``pop``), or None for a single device."""
    from jaxrepair import distributed

    devs = distributed.devices(devices)
    return distributed.make_mesh({"pop": len(devs)}, devs) if len(devs) > 1 else None


def run_program(spec: Spec, args: Args, runs: Run, *, progress=False, mesh=None) -> dict:
    """Places the inputs on ``mesh``, runs the compiled program, gathers the output."""
    _PROGRESS["bar"] = Progress("search", total=spec.strategy.generations, enabled=progress) if progress else None
    try:
        if mesh is not None:
            from jaxrepair import distributed

            args, runs = (distributed.put_tree(jax.device_get(t), mesh) for t in (args, runs))
            out = program(spec, args, runs, progress=progress, mesh=mesh)
            return jax.device_get(jax.tree.map(distributed.gather, out))
        return jax.device_get(program(spec, args, runs, progress=progress, mesh=None))
    finally:
        if _PROGRESS["bar"] is not None:
            _PROGRESS["bar"].close()
        _PROGRESS["bar"] = None


def non_dominated(accuracy, violation) -> list[int]:
    """Indices of the points no other point beats (accuracy ≥ and violation ≤, one strictly)."""
    F = np.stack([-np.asarray(accuracy, np.float64), np.asarray(violation, np.float64)], axis=1).reshape(-1, 2)
    return np.flatnonzero(non_dominated_mask(F)).tolist()
