"""Scalability probe: time and peak memory of localisation, SCM fitting and repair search as the
network grows — an MLP, a small CNN, a CIFAR-style ResNet-18 and a ResNet-50 (32×32×3 inputs,
10 classes, random-init weights: cost does not depend on what the weights are).

Operations, each measured in a fresh subprocess (compile and run timed apart, peak RSS above the
process's own baseline after importing jax and building the model and data):

1. ``ace-block``: ACE (``jr.causal.ace``) of every unit/channel of one block in the middle of the
   network, on the target-class logit;
2. ``ace-whole``: the same over every hidden post-activation site of the network (the default sites);
3. ``scm-fit``: ``jr.causal.fit_default`` on census (linear and MLP equations). jaxrepair's SCMs
   are over a tabular data set's columns, so this cost does not depend on the network: measured once;
4. ``pso`` / ``cma_es``: one factor search (``jr.repair.prepare(...).search``) over ``--k`` units of
   the block site, the same population and generations for every network, no early stop.

Every measurement has a time limit. A cheap *pilot* (fewer units, α values, images or generations)
runs first; when the pilot's extrapolation exceeds the limit the full measurement is not run and is
recorded as "exceeded" with that estimate. The extrapolation assumes the run time is proportional to
the FLOPs of the intervened evaluations — Σ over sites of units × α values × images × the FLOPs
downstream of the site (``jr.models.forward_flops``) — and for the search, to iterations × images.
A full run that hits the limit is killed and recorded as exceeded too.

Usage (≈ 20 minutes on a 2-core CPU; run it under the shared heavy-run lock)::

    flock /tmp/jaxrepair-heavy.lock nice -n 5 python experiments/scalability.py [--out experiments/results]

Writes ``scalability.{json,md,png}``; existing files are moved aside to ``*.previous``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

NETWORKS = {
    "mlp": {"label": "MLP 3072-512-512-10", "block": "layer1"},
    "cnn": {"label": "CNN 32-64-128 / 128", "block": "conv2"},
    "resnet18": {"label": "ResNet-18 (CIFAR)", "block": "s3b1"},
    "resnet50": {"label": "ResNet-50 (CIFAR)", "block": "s3b1"},
}
OPS = ["ace-block", "ace-whole", "pso", "cma_es"]
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


# --------------------------------------------------------------------------- worker (one subprocess per measurement)


def build(name: str):
    import jax

    import jaxrepair as jr

    key = jax.random.key(0)
    if name == "mlp":
        return jr.models.mlp([3072, 512, 512, 10], key=key)
    if name == "cnn":
        return jr.models.cnn((32, 32, 3), [32, 64, 128], [128], 10, key=key)
    if name == "resnet18":
        return jr.models.resnet((32, 32, 3), [(64, 2), (128, 2), (256, 2), (512, 2)], 10, key=key)
    if name == "resnet50":
        return jr.models.resnet((32, 32, 3), [(64, 3), (128, 4), (256, 6), (512, 3)], 10, key=key, block="bottleneck")
    raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")


def images(net, n: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, *net.input_shape)).astype(np.float32)  # seeded noise images (MLP: flattened)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(spec: dict) -> dict:
    import jax
    import numpy as np

    import jaxrepair as jr

    compiling = _CompileClock()
    jax.monitoring.register_event_duration_secs_listener(compiling.event)
    net = None if spec["op"] == "scm-fit" else build(spec["net"])
    op = spec["op"]
    if op == "scm-fit":
        ds = jr.data.load_tabular("census")
        base = _rss_mib()
        t = time.perf_counter()
        jr.causal.fit_default(ds, equations=spec["equations"], key=jax.random.key(0))
        wall = time.perf_counter() - t
        return _timed(wall, compiling.since(t), base, rows=int(ds.splits["train"].x.shape[0]), columns=len(ds.columns))
    x = images(net, spec["images"], 0)
    if op == "info":
        return info(net, x)
    if op == "ace":
        info_ = jr.sites(net)
        units = {s: np.unique(np.linspace(0, _units(info_[s]) - 1, u).round().astype(int)).tolist()
                 for s, u in spec["units"].items()}
        base = _rss_mib()
        t = time.perf_counter()
        loc = jr.causal.ace(net, x, jr.causal.TargetOutput(0), sites=list(units), units=units,
                            num_values=spec["values"])
        wall = time.perf_counter() - t
        return _timed(wall, compiling.since(t), base, top=[(n.site, n.unit) for n in loc.ranking()[:3]],
                      pairs=sum(len(u) for u in units.values()) * spec["values"])
    if op == "search":
        site = NETWORKS[spec["net"]]["block"]
        y = np.random.default_rng(1).integers(0, 10, len(x)).astype(np.int32)  # random labels: cost only
        split = {"x": x, "y": y}
        task = jr.repair.custom_task("scalability", jr.properties.Misclassification(),
                                     {"repair": split, "select": split, "test": split},
                                     effect=jr.causal.TargetOutput(0))
        g = spec["generations"]
        strategy = jr.repair.get_strategy(spec["strategy"], generations=g, population_size=spec["population"],
                                          patience=g + 1)  # no early stop: every network runs every generation
        base = _rss_mib()
        t = time.perf_counter()
        problem = jr.repair.prepare(net, task, [(site, u) for u in range(spec["k"])], sites=[site], strategy=strategy)
        out = problem.search(seeds=0, a=0.5, max_drop=None)
        wall = time.perf_counter() - t
        return _timed(wall, compiling.since(t), base, generations_run=int(out["generations_run"][0]),
                      evaluations=int(out["evaluations"][0]))
    raise ValueError(f"unknown op {op!r}")


def _units(site_info) -> int:
    return site_info.units


class _CompileClock:
    """Time spent tracing, lowering and compiling, from jax's monitoring events. Events nest (an inner
    jit is traced inside an outer one), so the clock keeps their intervals and measures the union."""

    def __init__(self):
        self.intervals = []

    def event(self, name, duration, **kw):
        if name in _COMPILE_EVENTS:
            end = time.perf_counter()
            self.intervals.append((end - duration, end))

    def since(self, start: float) -> float:
        total, reach = 0.0, start
        for lo, hi in sorted(self.intervals):
            lo = max(lo, reach)
            if hi > lo:
                total, reach = total + hi - lo, hi
        return total


def _timed(wall, c, base, **extra) -> dict:
    return {"wall_s": wall, "compile_s": c, "run_s": wall - c, "peak_rss_mib": _rss_mib(), "baseline_rss_mib": base,
            "peak_above_baseline_mib": _rss_mib() - base, **extra}


def info(net, x) -> dict:
    """Size of the network: parameters, per-example forward FLOPs (own counter and XLA's), units and
    downstream FLOPs of every hidden site, and one timed forward pass of the batch."""
    import jax

    import jaxrepair as jr

    flops = jr.models.forward_flops(net)
    sites = jr.sites(net)
    hidden = jr.models.hidden_sites(net)
    down = {s: sum(flops[d] for d in jr.models.descendants(net.graph, frozenset({s}))) for s in hidden}
    apply, params = jr.functional(net)
    xb = x[:64]  # the forward pass is timed on up to 64 images (the batch rate, not the ACE data)
    fwd = jax.jit(apply).lower(params, xb).compile()
    xla_per_example = float(jax.jit(apply).lower(params, x[:1]).compile().cost_analysis()["flops"])
    jax.block_until_ready(fwd(params, xb))
    t = time.perf_counter()
    jax.block_until_ready(fwd(params, xb))
    fwd_s = time.perf_counter() - t
    return {"parameters": jr.models.parameter_count(net), "flops": sum(flops.values()), "xla_flops": xla_per_example,
            "hidden_sites": hidden, "units": {s: _units(sites[s]) for s in hidden}, "downstream_flops": down,
            "forward_images": len(xb), "forward_batch_s": fwd_s,
            "forward_gflops_per_s": sum(flops.values()) * len(xb) / fwd_s / 1e9,
            "baseline_rss_mib": _rss_mib()}


# --------------------------------------------------------------------------- driver


def call(spec: dict, timeout: float) -> dict:
    """Runs one measurement in a fresh Python process with jaxrepair's persistent compile cache off, so
    every compile is cold (turning the cache off inside the worker after building the model is not
    enough: jax keeps using a cache it has opened)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    env = {**os.environ, "JAXREPAIR_NO_COMPILE_CACHE": "1"}
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "exceeded", "killed_after_s": time.perf_counter() - t}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        return {"status": "failed", "returncode": p.returncode, "stderr": p.stderr[-2000:]}
    return {"status": "measured", "process_s": time.perf_counter() - t, **json.loads(lines[-1][len("RESULT "):])}


def ace_work(sizes: dict, units: dict, values: int, n: int) -> float:
    """FLOPs of the intervened evaluations: Σ units × values × images × downstream FLOPs."""
    return sum(units[s] * values * n * sizes["downstream_flops"][s] for s in units)


def pilot_units(sizes: dict, sites: list, values: int, n: int, target: float) -> dict:
    """Units per site for a pilot of about ``target`` FLOPs (the same fraction of every site, ≥ 1)."""
    full = ace_work(sizes, {s: sizes["units"][s] for s in sites}, values, n)
    f = min(1.0, target / full)
    return {s: max(1, math.ceil(sizes["units"][s] * f)) for s in sites}


def full_or_estimate(rec: dict, pilot: dict, full: dict, limit: float, try_factor: float) -> dict:
    """Runs the full measurement under ``limit`` unless the pilot's estimate is over ``try_factor`` × the
    limit; where it is not run or is killed at the limit, the record keeps the estimate, and its compile
    time and memory come from the pilot."""
    from_pilot = {"status": "exceeded", "compile_s": pilot["compile_s"],
                  "peak_above_baseline_mib": pilot["peak_above_baseline_mib"], "memory_from": "pilot"}
    if rec["estimate_s"] > try_factor * limit:
        return {**rec, **from_pilot, "exceeded": "not run (estimate over the limit)"}
    got = call(full, limit)
    if got["status"] == "exceeded":
        return {**rec, **got, **from_pilot, "exceeded": f"killed at the limit ({limit:.0f} s)"}
    return {**rec, **got}


def measure_ace(net: str, sizes: dict, sites: list, a, limit: float) -> dict:
    full_units = {s: sizes["units"][s] for s in sites}
    full = {"op": "ace", "net": net, "units": full_units, "values": a.values, "images": a.images}
    work_full = ace_work(sizes, full_units, a.values, a.images)
    rec = {"sites": len(sites), "units": sum(full_units.values()), "values": a.values, "images": a.images,
           "work_flops": work_full}
    if work_full <= a.pilot_flops:  # the pilot would be the whole thing
        return {**rec, **call(full, limit)}
    pn, pv = min(a.images, a.pilot_images), min(a.values, 2)
    one_each = ace_work(sizes, {s: 1 for s in sites}, pv, 1)  # one unit of every site, one image
    pn = max(min(8, pn), min(pn, int(a.pilot_flops // one_each)))  # fewer images where sites are many and deep
    pu = pilot_units(sizes, sites, pv, pn, a.pilot_flops)
    pilot = call({"op": "ace", "net": net, "units": pu, "values": pv, "images": pn}, max(limit, a.limit))
    rec["pilot"] = {"units": sum(pu.values()), "values": pv, "images": pn, **pilot}
    if pilot["status"] != "measured":
        return {**rec, "status": "exceeded" if pilot["status"] == "exceeded" else "failed"}
    ratio = work_full / ace_work(sizes, pu, pv, pn)
    rec["estimate_run_s"] = pilot["run_s"] * ratio
    rec["estimate_s"] = pilot["compile_s"] + rec["estimate_run_s"]
    rec["extrapolation"] = f"pilot run time x {ratio:.3g} (ratio of intervened-evaluation FLOPs)"
    return full_or_estimate(rec, pilot, full, limit, a.try_factor)


def measure_search(net: str, strategy: str, a, limit: float) -> dict:
    full = {"op": "search", "net": net, "strategy": strategy, "generations": a.generations,
            "population": a.population, "k": a.k, "images": a.images}
    pn = min(a.images, a.pilot_images)
    pilot = call({**full, "generations": 1, "images": pn}, limit)
    rec = {"generations": a.generations, "population": a.population, "k": a.k, "images": a.images,
           "pilot": {"generations": 1, "images": pn, **pilot}}
    if pilot["status"] != "measured":
        return {**rec, "status": "exceeded" if pilot["status"] == "exceeded" else "failed"}
    # the search is a scan of G + 1 iterations (iteration 0 evaluates the initial population), each
    # evaluating the population on the repair images and the best on the select images
    ratio = (a.generations + 1) / 2 * a.images / pn
    rec["estimate_run_s"] = pilot["run_s"] * ratio
    rec["estimate_s"] = pilot["compile_s"] + rec["estimate_run_s"]
    rec["extrapolation"] = f"1-generation pilot on {pn} images: run time x {ratio:.3g} (iterations x images)"
    return full_or_estimate(rec, pilot, full, limit, a.try_factor)


def _fmt_s(r: dict) -> str:
    if r["status"] == "measured":
        return f"{r['wall_s']:.1f}"
    if r["status"] == "exceeded" and "estimate_s" in r:
        how = "killed at limit" if r.get("exceeded", "").startswith("killed") else "not run"
        return f"exceeded ({how}); est. {r['estimate_s']:.3g}"
    return r["status"]


def _cost(r: dict) -> float | None:
    """Measured wall time, or the estimate where the limit was exceeded (None if neither)."""
    if r["status"] == "measured":
        return r["wall_s"]
    return r.get("estimate_s")


def table(nets: dict, results: dict, limits: dict) -> str:
    head = ["network", "params", "GFLOPs/example", "operation", "work", "time (s)", "compile (s)", "run (s)",
            "peak RSS above baseline (MiB)", "limit (s)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for net, sizes in nets.items():
        for op in OPS:
            r = results[net][op]
            if op.startswith("ace"):
                work = f"{r['units']:,} units × {r['values']} α × {r['images']} img ({r['sites']} site{'s' * (r['sites'] > 1)})"
            else:
                work = f"k={r['k']}, pop {r['population']} × {r['generations']} gen, {r['images']} img"
            measured = r["status"] == "measured"
            run = f"{r['run_s']:.1f}" if measured else (f"est. {r['estimate_run_s']:.3g}" if "estimate_run_s" in r else "")
            comp = f"{r['compile_s']:.1f}" + ("" if measured else " (pilot)") if "compile_s" in r else ""
            mem = f"{r['peak_above_baseline_mib']:.0f}" + ("" if measured else " (pilot)") if "peak_above_baseline_mib" in r else ""
            out.append("| " + " | ".join([NETWORKS[net]["label"], f"{sizes['parameters'] / 1e6:.2f}M",
                                          f"{sizes['flops'] / 1e9:.3g}", op, work, _fmt_s(r), comp, run, mem,
                                          f"{limits[net][op]:.0f}"]) + " |")
    return "\n".join(out) + "\n"


def plot(nets: dict, results: dict, scm: list, limit: float, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = dict(zip(OPS, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    for ax, key, xlabel in ((axes[0], "parameters", "parameters"), (axes[1], "flops", "forward FLOPs per example")):
        for op in OPS:
            xs, ys, est = [], [], []
            for net, sizes in nets.items():
                c = _cost(results[net][op])
                if c is not None:
                    xs.append(sizes[key])
                    ys.append(c)
                    est.append(results[net][op]["status"] != "measured")
            order = np.argsort(xs)
            xs, ys, est = ([v[i] for i in order] for v in (xs, ys, est))
            ax.plot(xs, ys, "-", color=colours[op], label=op)
            ax.scatter([x for x, e in zip(xs, est) if not e], [y for y, e in zip(ys, est) if not e], color=colours[op],
                       marker="o", zorder=3)
            ax.scatter([x for x, e in zip(xs, est) if e], [y for y, e in zip(ys, est) if e], facecolors="white",
                       edgecolors=colours[op], marker="o", zorder=3)
        for s in scm:
            if s["status"] == "measured":
                ax.axhline(s["wall_s"], color="grey", ls=":" if s["equations"] == "linear" else "--", lw=1,
                           label=f"scm-fit ({s['equations']}, census; no network)")
        ax.axhline(limit, color="k", lw=0.8, label=f"time limit ({limit:.0f} s; ResNet-50 ace-whole: see table)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.margins(x=0.08)
        for net, sizes in nets.items():
            ax.annotate(net, xy=(sizes[key], 0), xycoords=("data", "axes fraction"), textcoords="offset points",
                        xytext=(0, 4), fontsize=8, ha="center", color="dimgrey")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("wall time incl. compile (s)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="k"))
    labels.append("hollow: exceeded the limit, estimate from a pilot")
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("jaxrepair cost against network size (2-core CPU, no GPU; log-log)", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument("--images", type=int, default=256, help="data batch (ACE data, repair and select splits)")
    p.add_argument("--values", type=int, default=8, help="α grid points per unit (fixed for every network)")
    p.add_argument("--k", type=int, default=8, help="units repaired by the search")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--limit", type=float, default=300.0, help="time limit per measurement (s)")
    p.add_argument("--limit-whole-resnet50", type=float, default=120.0)
    p.add_argument("--try-factor", type=float, default=2.0,
                   help="run the full measurement (killed at the limit) when the pilot estimates under this × limit")
    p.add_argument("--pilot-images", type=int, default=32)
    p.add_argument("--pilot-flops", type=float, default=4e11, help="intervened-evaluation FLOPs of an ACE pilot")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(worker(json.loads(a.worker))), flush=True)
        return 0
    for name in ("images", "values", "k", "population", "generations", "pilot_images"):
        if getattr(a, name) < (2 if name == "values" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(a, name)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    nets, results, limits = {}, {}, {}
    for net in a.networks:
        sizes = call({"op": "info", "net": net, "images": a.images}, 600)
        if sizes["status"] != "measured":
            raise RuntimeError(f"{net}: could not build and size the network: {sizes}")
        nets[net] = sizes
        print(f"[scal] {net}: {sizes['parameters']:,} params, {sizes['flops'] / 1e9:.3g} GFLOPs "
              f"(XLA {sizes['xla_flops'] / 1e9:.3g}), forward {sizes['forward_gflops_per_s']:.1f} GFLOP/s",
              file=sys.stderr, flush=True)
        block = NETWORKS[net]["block"]
        limits[net] = {op: a.limit for op in OPS}
        if net == "resnet50":
            limits[net]["ace-whole"] = a.limit_whole_resnet50
        results[net] = {}
        for op in OPS:
            if op == "ace-block":
                r = measure_ace(net, sizes, [block], a, limits[net][op])
            elif op == "ace-whole":
                r = measure_ace(net, sizes, sizes["hidden_sites"], a, limits[net][op])
            else:
                r = measure_search(net, op, a, limits[net][op])
            results[net][op] = r
            print(f"[scal] {net} {op}: {_fmt_s(r)} s ({time.perf_counter() - t0:.0f} s so far)", file=sys.stderr,
                  flush=True)
    scm = [{"equations": eq, **call({"op": "scm-fit", "equations": eq}, a.limit)} for eq in ("linear", "mlp")]
    total = time.perf_counter() - t0

    from jaxrepair.records import dumps, environment
    from jaxrepair.suite import machine as cpu_name

    env = environment()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    record = {"experiment": "scalability", "date": stamp, "machine": f"{cpu_name()}, no GPU",
              "environment": env, "settings": {k: v for k, v in vars(a).items() if k not in ("worker", "out")},
              "blocks": {n: NETWORKS[n]["block"] for n in nets}, "networks": nets, "results": results, "scm_fit": scm,
              "limits": limits, "total_s": total, "gpu": "no GPU figures: device not lent to this task"}
    for name in ("scalability.json", "scalability.md", "scalability.png"):
        if (out / name).exists():
            (out / name).rename(out / (name + ".previous"))
    (out / "scalability.json").write_text(dumps(record))
    plot(nets, results, scm, a.limit, out / "scalability.png")
    (out / "scalability.md").write_text(report(record, a))
    print((out / "scalability.md").read_text())
    return 0


def report(rec: dict, a) -> str:
    nets, results, scm = rec["networks"], rec["results"], rec["scm_fit"]
    sizes = ["| network | block site | parameters | GFLOPs/example (own counter) | GFLOPs/example (XLA cost_analysis) | "
             "hidden sites | hidden units/channels | forward of 64 images (s) | forward GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, s in nets.items():
        sizes.append(f"| {NETWORKS[n]['label']} | `{rec['blocks'][n]}` ({s['units'][rec['blocks'][n]]} units) | "
                     f"{s['parameters']:,} | {s['flops'] / 1e9:.4g} | {s['xla_flops'] / 1e9:.4g} | "
                     f"{len(s['hidden_sites'])} | {sum(s['units'].values()):,} | {s['forward_batch_s']:.4f} | "
                     f"{s['forward_gflops_per_s']:.1f} |")
    scm_rows = ["| equations | rows × columns | time (s) | compile (s) | run (s) | peak RSS above baseline (MiB) |",
                "|---|---|---|---|---|---|"]
    for s in scm:
        if s["status"] == "measured":
            scm_rows.append(f"| {s['equations']} | {s['rows']:,} × {s['columns']} | {s['wall_s']:.2f} | "
                            f"{s['compile_s']:.2f} | {s['run_s']:.2f} | {s['peak_above_baseline_mib']:.0f} |")
        else:
            scm_rows.append(f"| {s['equations']} | | {s['status']} | | | |")
    calib = ["| network | operation | pilot | pilot estimate (s) | measured (s) | estimate / measured |",
             "|---|---|---|---|---|---|"]
    for n in results:
        for op, r in results[n].items():
            if r["status"] == "measured" and "estimate_s" in r:
                pl = r["pilot"]
                what = (f"{pl['units']} units × {pl['values']} α × {pl['images']} img" if op.startswith("ace")
                        else f"1 gen, {pl['images']} img")
                calib.append(f"| {NETWORKS[n]['label']} | {op} | {what} | {r['estimate_s']:.3g} | {r['wall_s']:.3g} | "
                             f"{r['estimate_s'] / r['wall_s']:.2f} |")
    broke = [f"{NETWORKS[n]['label']} {op} (est. {r['estimate_s']:.3g} s)" if "estimate_s" in r else f"{NETWORKS[n]['label']} {op}"
             for n in results for op, r in results[n].items() if r["status"] != "measured"]
    failed = [f"{n} {op}: {r.get('stderr', '')[-300:]}" for n in results for op, r in results[n].items()
              if r["status"] == "failed" or r.get("pilot", {}).get("status") == "failed"]
    return "\n".join([
        "# Scalability probe: cost against network size\n",
        f"Measured {rec['date']} on {rec['machine']}, shared with other jobs; jax {rec['environment']['versions']['jax']}. "
        f"Regenerate: `flock /tmp/jaxrepair-heavy.lock nice -n 5 python experiments/scalability.py` "
        f"({rec['total_s'] / 60:.1f} min in all).\n",
        "**No GPU figures: device not lent to this task.**\n",
        "Random-init weights (cost does not depend on the weights) on seeded uniform-noise images, 32×32×3 "
        "(flattened to 3,072 for the MLP), 10 classes. Each measurement runs in a fresh Python process with jax's "
        "persistent compile cache off; *compile* is jax's own trace + lowering + XLA compile time (its monitoring "
        "events), *run* is the rest of the wall time; *peak RSS above baseline* is `ru_maxrss` after the operation "
        "minus `ru_maxrss` of the same process after importing jax and building the model and data (JAX on CPU "
        "has no memory_stats).\n",
        "## Networks\n", "\n".join(sizes) + "\n",
        "FLOPs are counted by `jr.models.forward_flops` from the graph's op shapes (a multiply-accumulate = 2 FLOPs, "
        "convolutions counting padded taps, as model zoos quote them); XLA's `cost_analysis()` does report flops on "
        "CPU and is shown beside it (it skips padded taps, hence lower on 32×32 images). The block site is a block "
        "in the middle of each network (MLP: the first of two hidden layers; CNN: the second of three conv stages; "
        "ResNets: the first block of the third of four stages).\n",
        "## Time and memory per operation\n",
        f"ACE: every unit of the block site (`ace-block`) or of every hidden post-activation site (`ace-whole`; "
        f"conv sites per channel), {a.values}-point α grid (half of CARE's 16; cost is linear in it), target-class "
        f"logit, {a.images} images. Search: factors (CARE's space, bounds [0, 2]) on units 0..{a.k - 1} of the block "
        f"site (which units does not change the cost), population {a.population}, {a.generations} generations, no "
        f"early stop, the same {a.images} images as the repair and select splits (random labels, misclassification "
        f"property). *exceeded* = the full measurement passes the limit: *not run* where the pilot estimates more than "
        f"{a.try_factor:g}× the limit, else run and *killed at limit*; the estimate is the pilot's compile time plus its run time scaled by the ratio of work (see the json "
        f"`extrapolation` field) — an estimate, not a measurement; compile time and memory then come from the pilot.\n",
        table(nets, results, rec["limits"]),
        "## How good the extrapolation is\n",
        "Where a pilot ran and the full measurement finished too, the pilot's estimate beside the measurement "
        "(the estimates for the rows over the limit are made the same way):\n",
        "\n".join(calib) + "\n",
        "## SCM fitting\n",
        "jaxrepair's SCMs (`jr.causal.fit_default`) are structural models over a tabular data set's columns, used by "
        "counterfactual fairness and counterfactual augmentation; they do not involve the network at all, so the "
        "cost is the same for every network here and is measured once, on census (default DAG, train split). An SCM "
        "over a ResNet's activations is not something jaxrepair or CARE fits, so it is not measured.\n",
        "\n".join(scm_rows) + "\n",
        "## Where it breaks on the 2-core CPU\n",
        ("Over the limit: " + "; ".join(broke) + ".\n") if broke else "Every measurement finished within its limit.\n",
        *(["Failed:\n\n" + "\n".join(f"- {f}" for f in failed) + "\n"] if failed else []),
        "![cost against parameters and FLOPs](scalability.png)\n",
    ])


if __name__ == "__main__":
    sys.exit(main())
