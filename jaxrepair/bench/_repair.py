"""``jaxrepair bench repair``: fitness-evaluation throughput of population repair, in one run.

For each zoo entry (census-sex with 5,000 repair samples; digits-badnets) and a population of 20:

* ``evaluations_per_s``: whole-population fitness evaluations (one ``vmap`` call) per second;
* ``speedup_vs_loop``: against a straightforward loop that evaluates one particle per jitted call;
* ``flops_ratio_pop_vs_one``: XLA's FLOP count for the population call ÷ that of one particle —
  below the population size because everything upstream of the repaired sites is shared;
* ``repair_s``: wall time of a full repair with the task's preset (PSO 20 × 100, early stop), the
  first call (with compilation) separate, localisation excluded.
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
    preset = repair.preset_for(task.kind)
    apply = models.Apply(bench.model.graph)
    loc = repair.localize(bench.model, task)
    chosen = loc.top(preset.k)
    problem = repair.prepare(bench.model, task, chosen, bounds=preset.bounds)
    space, slots, (params, stats) = problem.space, problem.slots, problem.args[:2]
    data = task.data["repair"]
    a = jnp.float32(preset.a)

    def fit(x):
        p, iv = space.realize(params, slots, x)
        return task.objective.fitness(lambda q, xx: apply(q, xx, iv), models.merge(p, stats), data, a)[0]

    lo, hi = space.bounds(params, slots, preset.bounds)
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

    t = time.perf_counter()
    r1 = repair.repair(bench.model, task, localization=loc, seed=seed)
    first = r1.timings["search"]
    r2 = repair.repair(bench.model, task, localization=loc, seed=seed + 1)
    total = time.perf_counter() - t
    return {
        "entry": name,
        "population": population,
        "repair_samples": int(data["property"]["x"].shape[0]),
        "selected_neurons": preset.k,
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
        "preset": preset.name,
        "repair_first_call_s": first,
        "repair_s": r2.timings["search"],
        "generations_run": [r1.search["generations_run"], r2.search["generations_run"]],
        "repair_evaluations_per_s": r2.search["evaluations"] / r2.timings["search"],
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
                  f" {r['preset']} preset repair {r['repair_s']:.2f}s ({r['repair_first_call_s']:.2f}s with compile)",
                  flush=True)
        out.append(r)
    return out
