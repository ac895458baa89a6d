"""``jaxrepair bench cold``: CARE's census task end to end from a cold process, phase by phase.

Each measurement runs in a fresh Python process: import jaxrepair, build the task, ACE over all 124
hidden neurons (CARE's Linear outputs) × 16 values × 1,000 samples, then the ``care`` preset's PSO
of the top 13 neurons, then the before/after report. The child reports wall seconds for import,
task set-up, localisation, search and report, and — from JAX's monitoring events — the seconds
spent tracing (jaxpr + lowering to MLIR) and compiling (XLA, or reading the persistent cache).
Run time is what is left of each phase.

Two runs: with an empty persistent compilation cache, and again with the cache the first run
filled (jaxrepair turns JAX's persistent cache on by default; ``JAXREPAIR_NO_COMPILE_CACHE=1``
turns it off). With ``--care-dir`` the task is CARE's own model and data files; without, the zoo's
census-sex model with its own splits.

CARE's task as its code runs it (see ``jaxrepair.repair._presets``); the data roles follow the
files' README: fitness violation on ``data_pso_di``, fitness accuracy on ``data_pso`` (CARE has no
separate select split: the best fitness is returned, so select = repair here), localisation on the
first 1,000 rows of ``data``, and the report is CARE's: share of discriminatory instances over the
10,000 rows of ``data`` and accuracy over ``data_acc``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

#: CARE's reference figures on these files (the data README): DI share 1.0 → 0.32–0.33, accuracy
#: 0.838 → 0.832–0.840, 574–647 s end to end on a 2-core CPU.
REFERENCE = {"di_before": 1.0, "di_after": [0.32, 0.33], "accuracy_before": 0.838, "accuracy_after": [0.832, 0.840],
             "end_to_end_s": [574, 647]}


def care_task(ref):
    """CARE's census/sex repair task from :func:`jaxrepair.data.load_care_census`'s result."""
    from jaxrepair import causal, properties, repair

    s = ref.sets
    fit = {"property": s["data_pso_di"], "accuracy": s["data_pso"]}
    splits = {"repair": fit, "select": fit, "test": {"property": s["data"], "accuracy": s["data_acc"]}}
    return repair.custom_task("care-census-sex", properties.IndividualFairness(8, (0.0, 1.0)), splits,
                              effect=causal.Fairness.make(8, [0, 1]), localize_batch={"x": s["data"]["x"][:1000]},
                              kind="fairness")


def _child(care_dir: str | None, seed: int, t_start: float | None = None) -> dict:
    """The measured run (in a fresh process started at ``t_start``, before ``import jaxrepair``)."""
    t0 = time.perf_counter() if t_start is None else t_start
    import jax

    import jaxrepair as jr

    t_import = time.perf_counter() - t0
    spans = {"trace": 0.0, "compile": 0.0}
    kinds = {"/jax/core/compile/jaxpr_trace_duration": "trace", "/jax/core/compile/jaxpr_to_mlir_module_duration": "trace",
             "/jax/core/compile/backend_compile_duration": "compile",
             "/jax/compilation_cache/cache_retrieval_time_sec": "compile"}

    def listen(event, duration, **_):
        if event in kinds:
            spans[kinds[event]] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    phases = {}

    def phase(name, fn):
        before = dict(spans)
        t = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t
        tr, co = spans["trace"] - before["trace"], spans["compile"] - before["compile"]
        phases[name] = {"wall_s": wall, "trace_s": tr, "compile_s": co, "run_s": max(0.0, wall - tr - co)}
        return out

    def setup():
        if care_dir:
            ref = jr.data.load_care_census(care_dir)
            return ref.model, care_task(ref)
        bench = jr.zoo.load("census-sex")
        return bench.model, jr.repair.from_zoo(bench, repair_samples=1000)

    model, task = phase("setup", setup)
    preset = jr.repair.preset_for(task.kind, "care")
    sites = jr.repair.candidate_sites(model, "factor", preset.site_kind)
    loc = phase("localize", lambda: jr.repair.localize(model, task, sites=sites,
                                                       effect=jr.repair.localization_effect(task, preset)))
    result = phase("repair", lambda: jr.repair(model, task, preset="care", localization=loc, seed=seed))
    total = time.perf_counter() - t0
    n_units = sum(len(s.units) for s in loc.sites.values())
    return {"import_s": t_import, "phases": phases, "total_s": total,
            "trace_s": spans["trace"], "compile_s": spans["compile"],
            "run_s": sum(p["run_s"] for p in phases.values()),
            "units_localised": n_units, "samples": loc.num_samples, "values": loc.num_values,
            "selected": [(n.site, n.unit) for n in result.selected], "generations_run": result.search["generations_run"],
            "before": {"di_share": result.before["violation"], "accuracy": result.before["accuracy"]},
            "after": {"di_share": result.after["violation"], "accuracy": result.after["accuracy"]},
            "compile_cache": jax.config.jax_compilation_cache_dir or "off"}


def _spawn(care_dir, seed, env) -> dict:
    code = ("import time; t = time.perf_counter(); import json, jaxrepair; jaxrepair.compile_cache.enable(); "
            "from jaxrepair.bench import _cold; "
            f"print(json.dumps(_cold._child({care_dir!r}, {seed}, t)))")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"the cold-start child failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(*, care_dir: str | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Runs the child twice (empty persistent cache, then the filled cache) plus once with the cache off."""
    if care_dir is not None:
        from jaxrepair.data import load_care_census

        load_care_census(care_dir)  # a missing or broken directory is reported before any work
    out = {"task": "care census/sex" if care_dir else "zoo census-sex", "care_dir": care_dir, "reference": REFERENCE}
    with tempfile.TemporaryDirectory(prefix="jaxrepair-cold-") as cache:
        base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
        runs = {"no_cache": {**base, "JAXREPAIR_NO_COMPILE_CACHE": "1"},
                "empty_cache": {**base, "JAXREPAIR_COMPILE_CACHE_DIR": cache},
                "warm_cache": {**base, "JAXREPAIR_COMPILE_CACHE_DIR": cache}}
        for name, env in runs.items():
            r = _spawn(care_dir, seed, env)
            out[name] = r
            if progress:
                print(f"[bench cold] {name}: total {r['total_s']:.2f}s (import {r['import_s']:.2f}s, trace "
                      f"{r['trace_s']:.2f}s, compile {r['compile_s']:.2f}s, run {r['run_s']:.2f}s); DI share "
                      f"{r['before']['di_share']:.3f} -> {r['after']['di_share']:.3f}, accuracy "
                      f"{r['before']['accuracy']:.4f} -> {r['after']['accuracy']:.4f}", file=sys.stderr, flush=True)
    return out
