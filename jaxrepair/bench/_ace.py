"""``jaxrepair bench ace``: throughput of ACE localisation against a plain forward pass and a loop.

For each model it measures, in one run on this machine:

* ACE wall time, compile separate from run, and intervened sample-evaluations per second;
* ``cost_ratio_vs_forward``: time per intervened sample-evaluation ÷ time per row of a plain jitted
  forward pass over rows laid out like the sweep (``lax.map`` over chunks of ``chunk`` pairs ×
  ``samples`` rows, each pair a distinct input), so call overhead flatters neither side;
* ``speedup_vs_loop``: a Python loop over (neuron, value) pairs, one jitted intervened forward each.

Where the full forward sweep or loop would take too long, it is timed on a stated number of pairs
(``*_pairs_timed``) and the per-evaluation time is used; nothing is extrapolated beyond that.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
from jax import lax

from jaxrepair import causal, interventions, models


def _time(f, *args, repeat=1):
    jax.block_until_ready(f(*args))
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
    return best


def bench_model(name, widths, *, samples=1000, num_values=16, forward_pairs=2048, loop_pairs=32, seed=0):
    key = jax.random.key(seed)
    net = models.mlp(widths, key=key)
    apply, params = models.functional(net)
    x = jax.random.normal(jax.random.key(seed + 1), (samples, widths[0]))
    effect = causal.TargetOutput(0)
    sites = models.hidden_sites(net)
    info = models.sites(net)
    batch = {"x": x}
    cs = 256  # (unit, value) pairs in flight, for ACE and the forward sweep alike

    cold = causal.ace(net, batch, effect, sites=sites, num_values=num_values, chunk_size=cs, batch_size=samples,
                      progress=True)
    loc = causal.ace(net, batch, effect, sites=sites, num_values=num_values, chunk_size=cs, batch_size=samples,
                     progress=True)  # compiled (and cached) by the call before: its run time is clean
    compile_s = cold.timings["compile_s"]  # trace + compile (a persistent-cache read when cached)
    first = causal.ace(net, {"x": x + 1e-3}, effect, sites=sites, num_values=num_values, chunk_size=cs,
                       batch_size=samples)  # same program, new data: the jit path, no compile
    run_s = min(loc.timings["run_s"], first.timings["total_s"])
    evals = sum(info[s].num_units for s in sites) * num_values * samples
    per_eval = run_s / evals

    # Plain forward over rows laid out like the sweep: lax.map over chunks of pairs, each pair's rows
    # a distinct input (x shifted by that pair's value), reduced like ACE reduces.
    total_pairs = evals // samples
    pairs = min(total_pairs, max(forward_pairs, cs))
    shifts = jnp.linspace(-1.0, 1.0, pairs)

    @jax.jit
    def forward_sweep(params, x, shifts):
        return lax.map(lambda a: jnp.sum(apply(params, x + a)[:, 0]), shifts, batch_size=cs)

    t = time.perf_counter()
    jax.block_until_ready(forward_sweep(params, x, shifts))
    fwd_compile = time.perf_counter() - t
    fwd_s = _time(forward_sweep, params, x, shifts)
    per_row = fwd_s / (pairs * samples)

    # The straightforward loop: one jitted intervened forward per (neuron, value) pair, no sharing.
    f = jax.jit(lambda p, x, iv: jnp.mean(apply(p, x, iv)[:, 0]))
    shape = info[sites[0]].shape
    ivs = [{sites[0]: interventions.do(shape, [j % shape[0]], 0.1 * j)} for j in range(loop_pairs)]
    jax.block_until_ready(f(params, x, ivs[0]))
    t = time.perf_counter()
    for iv in ivs:
        jax.block_until_ready(f(params, x, iv))
    loop_per_eval = (time.perf_counter() - t) / (loop_pairs * samples)

    return {
        "model": name,
        "widths": list(widths),
        "samples": samples,
        "num_values": num_values,
        "hidden_neurons": sum(info[s].num_units for s in sites),
        "intervened_sample_evaluations": evals,
        "ace_compile_s": compile_s,
        "ace_run_s": run_s,
        "evaluations_per_s": evals / run_s,
        "forward_rows_timed": pairs * samples,
        "forward_compile_s": fwd_compile,
        "forward_s_per_row": per_row,
        "cost_ratio_vs_forward": per_eval / per_row,
        "loop_pairs_timed": loop_pairs,
        "loop_s_per_eval": loop_per_eval,
        "speedup_vs_loop": loop_per_eval / per_eval,
        "device": str(jax.devices()[0].device_kind),
        "num_devices": jax.device_count(),
    }


MODELS = {
    "census-mlp": [13, 64, 32, 16, 8, 4, 2],
    "wide-mlp": [784, 1024, 1024, 1024, 10],
}


def run(*, samples=1000, models_=None, progress=True):
    out = []
    for name in models_ or MODELS:
        r = bench_model(name, MODELS[name], samples=samples)
        if progress:
            print(
                f"{name}: {r['intervened_sample_evaluations']:,} evals in {r['ace_run_s']:.3f}s run"
                f" (+{r['ace_compile_s']:.2f}s compile) = {r['evaluations_per_s']:.3g}/s;"
                f" cost ratio vs forward {r['cost_ratio_vs_forward']:.3f}; speed-up vs loop {r['speedup_vs_loop']:.1f}x",
                flush=True,
            )
        out.append(r)
    return out
