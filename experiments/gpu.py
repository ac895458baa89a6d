"""Accelerator figures (issue 26): exact and adaptive ACE on a CIFAR-style ResNet-18 and ResNet-50
(32×32×3, random-init weights as in ``scalability.py``: cost does not depend on the weights) and one
PSO factor search, within a time budget (8 minutes by default), written to one JSON record.

Per network, on the middle block of ``scalability.py`` (``s3b1``: 256 channels on the ResNet-18,
1,024 on the ResNet-50) and ``--rows`` seeded noise images, on the target-class probability:

* ``exact``: ``jr.causal.ace`` over every channel of the block × ``--values`` α values (compile and
  run timed apart);
* ``adaptive``: ``jr.causal.adaptive_ace`` (k 10, δ 0.05) on the same scope from a cleared cache of
  compiled programs, its top-10 overlap with exact ACE's and the (row, α) evaluations it saved;
* ``pso``: one ``jr.repair.prepare(...).search`` over 10 channels of the block, 20 generations of 32
  particles, no early stop.

A measurement that would start after the budget is spent is recorded as skipped. ``--tiny`` runs
small ResNets on a few rows so the script itself is tested on a CPU (``tests/test_experiments.py``).

Usage::

    python experiments/gpu.py [--out experiments/results] [--rows 256] [--values 8] [--budget-s 480]

Writes ``gpu.json`` (``gpu-tiny.json`` with ``--tiny``); an existing file is moved aside to ``*.previous``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import jax
import numpy as np

import jaxrepair as jr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scalability import NETWORKS, build, images  # noqa: E402

EFFECT = jr.causal.TargetOutput(0, "prob")


def tiny(name: str):
    key = jax.random.key(0)
    if name == "resnet18":
        return jr.models.resnet((8, 8, 3), [(4, 1), (8, 1), (16, 1)], 10, key=key)
    return jr.models.resnet((8, 8, 3), [(4, 1), (4, 1), (4, 1)], 10, key=key, block="bottleneck")


def measure(name: str, args, clock) -> dict:
    net = tiny(name) if args.tiny else build(name)
    site = NETWORKS[name]["block"] if not args.tiny else "s3b1"
    x = images(net, args.rows, 0)
    channels = jr.sites(net)[site].shape[-1]
    out = {"network": name, "site": site, "channels": channels, "rows": args.rows, "values": args.values,
           "parameters": jr.models.parameter_count(net)}
    if clock():
        exact = jr.causal.ace(net, x, EFFECT, sites=[site], num_values=args.values, progress=True)
        out["exact"] = {**exact.timings, "top10": [n[:2] for n in exact.top(10)]}
    else:
        exact, out["exact"] = None, {"skipped": "time budget spent"}
    if clock():
        jax.clear_caches()
        t = time.perf_counter()
        ad = jr.causal.adaptive_ace(net, x, EFFECT, sites=[site], k=10, num_values=args.values, progress=True)
        wall = time.perf_counter() - t
        out["adaptive"] = {"wall_s": wall, "rounds": ad.rounds, "pair_saving": ad.saving,
                           "top10": [n[:2] for n in ad.top()]}
        if exact is not None:
            out["adaptive"]["top10_overlap"] = len({n[:2] for n in ad.top()} & {n[:2] for n in exact.top(10)})
            out["adaptive"]["wall_saving"] = (exact.timings["compile_s"] + exact.timings["run_s"]) / wall
    else:
        out["adaptive"] = {"skipped": "time budget spent"}
    if clock():
        y = np.random.default_rng(1).integers(0, 10, len(x)).astype(np.int32)  # random labels: cost only
        split = {"x": x, "y": y}
        task = jr.repair.custom_task("gpu", jr.properties.Misclassification(),
                                     {"repair": split, "select": split, "test": split}, effect=EFFECT)
        strategy = jr.repair.get_strategy("pso", generations=args.generations, population_size=32,
                                          patience=args.generations + 1)
        t = time.perf_counter()
        problem = jr.repair.prepare(net, task, [(site, u) for u in range(min(10, channels))], sites=[site],
                                    strategy=strategy)
        res = problem.search(seeds=0, a=0.5, max_drop=None)
        out["pso"] = {"wall_s": time.perf_counter() - t, "generations_run": int(res["generations_run"][0]),
                      "evaluations": int(res["evaluations"][0])}
    else:
        out["pso"] = {"skipped": "time budget spent"}
    return out


def _secs(m: dict) -> str:
    if "skipped" in m:
        return m["skipped"]
    return f"{m.get('wall_s', m.get('compile_s', 0) + m.get('run_s', 0)):.2f} s"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="experiments/results")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--values", type=int, default=8)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=480.0, help="no measurement starts after this many seconds")
    p.add_argument("--tiny", action="store_true", help="small networks and rows: checks the script on a CPU")
    args = p.parse_args(argv)
    if args.tiny:
        args.rows, args.values, args.generations = min(args.rows, 12), min(args.values, 4), min(args.generations, 3)
    t0 = time.perf_counter()
    clock = lambda: time.perf_counter() - t0 < args.budget_s  # noqa: E731
    device = jax.devices()[0]
    if device.platform == "cpu" and not args.tiny:
        print("[gpu] no accelerator: JAX sees only the CPU; the figures will be the CPU's", file=sys.stderr)
    rows = []
    for name in ("resnet18", "resnet50"):
        print(f"[gpu] {name}", file=sys.stderr, flush=True)
        rows.append(measure(name, args, clock))
    record = {"experiment": "gpu", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "platform": device.platform, "device": getattr(device, "device_kind", str(device)),
              "devices": jax.device_count(), "tiny": args.tiny, "budget_s": args.budget_s,
              "environment": jr.records.environment(), "rows": rows, "total_s": time.perf_counter() - t0,
              "command": " ".join(["python", "experiments/gpu.py", *(argv if argv is not None else sys.argv[1:])])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("gpu-tiny.json" if args.tiny else "gpu.json")
    if path.exists():
        path.rename(path.with_name(path.name + ".previous"))
    path.write_text(jr.records.dumps(record))
    for r in rows:
        a = r["adaptive"]
        print(f"{r['network']} {r['site']} ({r['channels']} channels, {r['rows']} rows x {r['values']} values): "
              f"exact {_secs(r['exact'])}, adaptive {_secs(a)} "
              f"(overlap {a.get('top10_overlap')}), pso {_secs(r['pso'])}")
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
