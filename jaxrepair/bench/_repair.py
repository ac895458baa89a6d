"""``jaxrepair bench repair``: fitness-evaluation throughput of population repair, in one run.

For each zoo entry (census-sex with 5,000 repair samples; digits-badnets) and a population of 20:

* ``evaluations_per_s``: whole-population fitness evaluations (one ``vmap`` call) per second;
* ``speedup_vs_loop``: against a straightforward loop that evaluates one particle per jitted call;
* ``flops_ratio_pop_vs_one``: XLA's FLOP count for the population call ÷ that of one particle —
  below the population size because everything upstream of the repaired sites is shared;
* ``care_repair_s``: wall time of a full CARE-preset repair (PSO 20 × 100, early stop), compile
  separate from run, localisation excluded.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from jaxrepair import models, repair, zoo
from jaxrepair.bench._ace import _time

ENTRIES = ("census-sex", "digits-badnets")


def _flops(f, *args) -> float | None:
    try:
        ca = jax.jit(f).lower(*args).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return float(ca.get("flops")) if ca and ca.get("flops") else None
    except Exception:  # noqa: BLE001 - cost analysis is optional per backend
        return None


def bench_entry(name: str, *, population: int = 20, repair_samples: int = 5000, loop_particles: int = 20, seed: int = 0):
    bench = zoo.load(name, progress=True)
    task = repair.from_zoo(bench, repair_samples=repair_samples, seed=seed)
    d = repair.DEFAULTS[task.kind]
    apply, params = models.functional(bench.model)
    loc = repair.localize(bench.model, task, sites=repair.candidate_sites(bench.model))
    chosen = loc.top(d["k"])
    space = repair.make_space("factor", bench.model, repair.group([(n.site, n.unit) for n in chosen], models.sites(bench.model)),
                              bounds=d["bounds"])
    data = task.data["repair"]
    a = jnp.float32(d["a"])

    def fit(x):
        p, iv = space.realize(params, x)
        return task.objective.fitness(lambda q, xx: apply(q, xx, iv), p, data, a)[0]

    lo, hi = space.bounds(params)
    pop = lo + jax.random.uniform(jax.random.key(seed), (population, space.num_dims)) * (hi - lo)
    pop_fit = jax.jit(jax.vmap(fit))
    one_fit = jax.jit(fit)
    t_pop = _time(pop_fit, pop, repeat=5)
    chunked = {}
    for c in (1, 4):
        f = jax.jit(lambda pop, c=c: jax.lax.map(fit, pop, batch_size=c))
        chunked[c] = _time(f, pop, repeat=5)

    def loop(pop):
        return [one_fit(pop[i]) for i in range(loop_particles)]

    t_loop = _time(loop, pop, repeat=3) / loop_particles
    f_pop, f_one = _flops(jax.vmap(fit), pop), _flops(fit, pop[0])

    strat = repair.get_strategy("care")
    t = time.perf_counter()
    r1 = repair.repair(bench.model, task, k=d["k"], bounds=d["bounds"], a=d["a"], strategy=strat, localization=loc, seed=seed)
    first = r1.timings["search"]
    r2 = repair.repair(bench.model, task, k=d["k"], bounds=d["bounds"], a=d["a"], strategy=strat, localization=loc, seed=seed + 1)
    total = time.perf_counter() - t
    return {
        "entry": name,
        "population": population,
        "repair_samples": int(data["property"]["x"].shape[0]),
        "selected_neurons": d["k"],
        "population_call_s": t_pop,
        "evaluations_per_s": population / t_pop,
        "loop_s_per_evaluation": t_loop,
        "loop_evaluations_per_s": 1.0 / t_loop,
        "speedup_vs_loop": t_loop / (t_pop / population),
        "particle_chunk_call_s": {str(c): v for c, v in chunked.items()},
        "particle_chunk_speedup_vs_loop": {str(c): t_loop / (v / population) for c, v in chunked.items()},
        "flops_population": f_pop,
        "flops_one": f_one,
        "flops_ratio_pop_vs_one": (f_pop / f_one) if f_pop and f_one else None,
        "care_repair_first_call_s": first,
        "care_repair_s": r2.timings["search"],
        "care_generations_run": [r1.search["generations_run"], r2.search["generations_run"]],
        "care_evaluations_per_s": r2.search["evaluations"] / r2.timings["search"],
        "bench_wall_s": total,
        "device": str(jax.devices()[0].device_kind),
    }


def run(*, entries=None, repair_samples: int = 5000, progress: bool = True):
    out = []
    for name in entries or ENTRIES:
        r = bench_entry(name, repair_samples=repair_samples)
        if progress:
            fr = r["flops_ratio_pop_vs_one"]
            print(f"{name}: {r['evaluations_per_s']:.3g} fitness evals/s (population {r['population']} x"
                  f" {r['repair_samples']} samples), {r['speedup_vs_loop']:.1f}x a per-particle loop"
                  f" (lax.map chunks of 1 / 4 particles: {r['particle_chunk_speedup_vs_loop']['1']:.1f}x /"
                  f" {r['particle_chunk_speedup_vs_loop']['4']:.1f}x);"
                  f" FLOPs(pop)/FLOPs(one) {('n/a' if fr is None else f'{fr:.1f}')};"
                  f" CARE preset repair {r['care_repair_s']:.2f}s ({r['care_repair_first_call_s']:.2f}s with compile)",
                  flush=True)
        out.append(r)
    return out
