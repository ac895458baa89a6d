"""Compiles and seconds of a random-selection sweep: 20 random neuron selections × k ∈ {5, 10, 20}
on census-sex (PSO, 20 particles × 30 generations, 2,000 repair samples), each a separate
``jr.repair(..., selection=...)`` call, as a user's ablation loop would run it.

Uses only ``jr.repair``'s long-standing arguments, so the same script measures an older checkout
(``PYTHONPATH=/path/to/old python experiments/selection_sweep.py``). Prints one JSON record:
backend compiles of the search program, total seconds, seconds per cell.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np

import jaxrepair as jr


def main() -> dict:
    compiles = {"n": 0, "s": 0.0}

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles["n"] += 1
            compiles["s"] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    bench = jr.zoo.load("census-sex")
    task = jr.repair.from_zoo(bench, repair_samples=2000)
    sites = jr.models.hidden_sites(bench.model)
    info = jr.sites(bench.model)
    pool = [(s, u) for s in sites for u in range(info[s].num_units)]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    c0 = dict(compiles)
    cells = 0
    for k in (5, 10, 20):
        for _ in range(20):
            sel = [pool[i] for i in rng.choice(len(pool), k, replace=False)]
            jr.repair(bench.model, task, selection=sel, strategy="pso", a=0.5, bounds=(-1.0, 3.0), generations=30,
                      population_size=20, seed=cells, max_drop=None)
            cells += 1
    wall = time.perf_counter() - t0
    out = {"jaxrepair": jr.__file__, "cells": cells, "wall_s": wall, "s_per_cell": wall / cells,
           "backend_compiles": compiles["n"] - c0["n"], "compile_s": compiles["s"] - c0["s"]}
    if hasattr(jr.repair, "prepare"):  # the same 60 cells through one prepared problem (k_max = 20)
        rng = np.random.default_rng(0)
        sels = [[pool[i] for i in rng.choice(len(pool), k, replace=False)] for k in (5, 10, 20) for _ in range(20)]
        c1, t1 = dict(compiles), time.perf_counter()
        strat = jr.repair.get_strategy("pso", generations=30, population_size=20)
        problem = jr.repair.prepare(bench.model, task, sels[0], k_max=20, strategy=strat, bounds=(-1.0, 3.0))
        for i, sel in enumerate(sels):
            problem.model_for(problem.search(seeds=i, a=0.5, selections=[sel]), 0)
        out["prepared"] = {"wall_s": time.perf_counter() - t1, "backend_compiles": compiles["n"] - c1["n"],
                           "compile_s": compiles["s"] - c1["s"]}
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
    sys.exit(0)
