"""Localisation and repair on large models within bounded memory, timed: a 784→4096→4096→10 MLP
and a ResNet-18-sized CNN on CIFAR-shaped input (32×32×3; 4 stages × 2 basic blocks, 64–512
channels, 11.2M parameters). Random weights: the point is time and memory, not accuracy.

Each phase reports wall time (first call, compile included) and the process's peak RSS after it.
ACE keeps memory bounded by chunking (``memory_budget``); repair evaluates the population in
``lax.map`` chunks on CPU. Writes ``experiments/results/large_models.{json,md}``::

    python experiments/large_models.py [--resnet-units 16] [--mlp-samples 256]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import jax
import numpy as np

import jaxrepair as jr


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _task(x, col_values=(0.0, 1.0)):
    rng = np.random.default_rng(1)
    splits = {}
    for name in ("repair", "select", "test"):
        idx = rng.permutation(len(x))
        splits[name] = {"x": x[idx], "y": rng.integers(0, 10, len(x)).astype(np.int32)}
    return splits


def mlp_run(samples: int) -> dict:
    net = jr.models.mlp([784, 4096, 4096, 10], key=jax.random.key(0))
    x = np.random.default_rng(0).uniform(0, 1, (samples, 784)).astype(np.float32)
    x[:, 0] = np.random.default_rng(2).integers(0, 2, samples)
    out = {"model": "mlp 784-4096-4096-10", "parameters": int(sum(np.size(v) for p in net.params().values() for v in p.values()))}
    for site in ("layer2", "layer1"):
        t = time.perf_counter()
        jr.causal.ace(net, x, jr.causal.TargetOutput(3), sites=[site], num_values=16)
        dt = time.perf_counter() - t
        evals = 4096 * 16 * samples
        out[f"ace_{site}"] = {"units": 4096, "values": 16, "samples": samples, "wall_s": dt, "evals_per_s": evals / dt,
                              "peak_rss_gib": _rss_gib(), "path": "rank-1" if site == "layer2" else "rank-1 (dense consumer)"}
        print(f"[large] mlp ACE {site}: {dt:.1f}s, {evals / dt:.3g} evals/s, peak RSS {_rss_gib():.2f} GiB", file=sys.stderr, flush=True)
    task = jr.repair.custom_task("large-mlp", jr.properties.IndividualFairness(0, (0.0, 1.0)), _task(x),
                                 effect=jr.causal.Fairness.make(0, [0, 1]))
    t = time.perf_counter()
    r = jr.repair(net, task, k=32, sites=["layer2"], strategy="pso",
                  generations=10, population_size=20)
    dt = time.perf_counter() - t
    out["repair"] = {"k": 32, "population": 20, "generations": int(r.search["generations_run"]), "wall_s": dt,
                     "timings": r.timings, "peak_rss_gib": _rss_gib()}
    print(f"[large] mlp repair: {dt:.1f}s ({r.timings}), peak RSS {_rss_gib():.2f} GiB", file=sys.stderr, flush=True)
    return out


def resnet_run(units: int, samples: int) -> dict:
    net = jr.models.resnet((32, 32, 3), [(64, 2), (128, 2), (256, 2), (512, 2)], 10, key=jax.random.key(0))
    x = np.random.default_rng(0).uniform(0, 1, (samples, 32, 32, 3)).astype(np.float32)
    out = {"model": "resnet-18-sized (32x32x3, 64-512 channels)",
           "parameters": int(sum(np.size(v) for p in net.params().values() for v in p.values()))}
    apply, params = jr.functional(net)
    t = time.perf_counter()
    jax.block_until_ready(jax.jit(apply)(params, x))
    out["forward_first_call_s"] = time.perf_counter() - t
    for site in ("s4b2", "s2b2"):
        t = time.perf_counter()
        jr.causal.ace(net, x, jr.causal.TargetOutput(3), sites=[site], units={site: list(range(units))}, num_values=8)
        dt = time.perf_counter() - t
        evals = units * 8 * samples
        out[f"ace_{site}"] = {"channels": units, "values": 8, "samples": samples, "wall_s": dt, "evals_per_s": evals / dt,
                              "peak_rss_gib": _rss_gib()}
        print(f"[large] resnet ACE {site}: {units} channels x 8 values x {samples} samples in {dt:.1f}s, "
              f"peak RSS {_rss_gib():.2f} GiB", file=sys.stderr, flush=True)
    xs = np.concatenate([x, x[:, ::-1]])  # 2·samples images
    xs[:, 0, 0, 0] = np.repeat([0.0, 1.0], len(x))
    task = jr.repair.custom_task("large-resnet", jr.properties.Misclassification(), _task(xs),
                                 effect=jr.causal.TargetOutput(3))
    t = time.perf_counter()
    r = jr.repair(net, task, selection=[("s4b2", c) for c in range(8)], strategy="pso", generations=3, population_size=8)
    dt = time.perf_counter() - t
    out["repair"] = {"factors": 8, "population": 8, "generations": int(r.search["generations_run"]), "samples": len(xs),
                     "wall_s": dt, "timings": r.timings, "peak_rss_gib": _rss_gib()}
    print(f"[large] resnet repair: {dt:.1f}s, peak RSS {_rss_gib():.2f} GiB", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mlp-samples", type=int, default=256)
    p.add_argument("--resnet-units", type=int, default=16)
    p.add_argument("--resnet-samples", type=int, default=32)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    env = jr.records.environment()
    rec = {"environment": env, "mlp": mlp_run(a.mlp_samples), "resnet": resnet_run(a.resnet_units, a.resnet_samples)}
    out = Path(a.out)
    jr.records.write_json(out / "large_models.json", rec)
    m, r = rec["mlp"], rec["resnet"]
    rows = [
        ("MLP 784-4096-4096-10", "ACE layer2 (all 4096 units x 16 values)", f"{m['ace_layer2']['samples']} samples",
         f"{m['ace_layer2']['wall_s']:.1f}", f"{m['ace_layer2']['evals_per_s']:.3g}", f"{m['ace_layer2']['peak_rss_gib']:.2f}"),
        ("MLP 784-4096-4096-10", "ACE layer1 (all 4096 units x 16 values)", f"{m['ace_layer1']['samples']} samples",
         f"{m['ace_layer1']['wall_s']:.1f}", f"{m['ace_layer1']['evals_per_s']:.3g}", f"{m['ace_layer1']['peak_rss_gib']:.2f}"),
        ("MLP 784-4096-4096-10", "ACE + PSO repair of 32 neurons (20 x 10)", "", f"{m['repair']['wall_s']:.1f}", "",
         f"{m['repair']['peak_rss_gib']:.2f}"),
        ("ResNet-18-sized", f"ACE s4b2 ({r['ace_s4b2']['channels']} channels x 8 values)", f"{r['ace_s4b2']['samples']} samples",
         f"{r['ace_s4b2']['wall_s']:.1f}", f"{r['ace_s4b2']['evals_per_s']:.3g}", f"{r['ace_s4b2']['peak_rss_gib']:.2f}"),
        ("ResNet-18-sized", f"ACE s2b2 ({r['ace_s2b2']['channels']} channels x 8 values)", f"{r['ace_s2b2']['samples']} samples",
         f"{r['ace_s2b2']['wall_s']:.1f}", f"{r['ace_s2b2']['evals_per_s']:.3g}", f"{r['ace_s2b2']['peak_rss_gib']:.2f}"),
        ("ResNet-18-sized", "PSO repair of 8 channel factors (8 x 3)", f"{r['repair']['samples']} samples",
         f"{r['repair']['wall_s']:.1f}", "", f"{r['repair']['peak_rss_gib']:.2f}"),
    ]
    table = jr.records.markdown_table(["model", "phase", "data", "wall s (incl. compile)", "intervened evals/s",
                                       "peak RSS so far (GiB)"], rows)
    md = (f"# Large models on CPU\n\nMeasured {env['date']} on {env['device']} ({env['machine']}), jax "
          f"{env['versions']['jax']}; MLP {m['parameters']:,} parameters, ResNet {r['parameters']:,}. "
          f"Regenerate: `python experiments/large_models.py`.\n\n{table}")
    jr.records.write_text(out / "large_models.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
