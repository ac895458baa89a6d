"""Memory check for issue 2: one layer of 10,000 neurons x 16 values x 10,000 samples.

Runs ACE on every neuron of the hidden layer of a 784->10000->10 MLP over 10,000 samples
(1.6e9 intervened sample-evaluations) and prints the peak resident memory of the process, so the
claim "runs in a few GB" is measured, not assumed. Usage::

    python experiments/ace_memory.py [--samples 10000] [--width 10000] [--json out.json]
"""

import argparse
import json
import resource
import sys
import time

import jax

import jaxrepair as jr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--width", type=int, default=10_000)
    p.add_argument("--num-values", type=int, default=16)
    p.add_argument("--memory-budget", type=float, default=512e6)
    p.add_argument("--json")
    a = p.parse_args(argv)
    net = jr.models.mlp([784, a.width, 10], key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (a.samples, 784))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    loc = jr.causal.ace(net, x, jr.causal.TargetOutput(0), sites=["layer1"], num_values=a.num_values,
                        memory_budget=a.memory_budget, progress=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    evals = a.width * a.num_values * a.samples
    rec = {
        "neurons": a.width, "num_values": a.num_values, "samples": a.samples,
        "intervened_sample_evaluations": evals, "wall_s": wall, "evaluations_per_s": evals / wall,
        "peak_rss_gib": peak, "rss_before_ace_gib": rss0, "memory_budget_bytes": a.memory_budget,
        "top3": [(n.site, n.unit, n.score) for n in loc.top(3)],
        "device": jax.devices()[0].device_kind,
    }
    print(json.dumps(rec, indent=1))
    if a.json:
        jr.records.write_json(a.json, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
