"""The ``jaxrepair`` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _load_model(spec: str):
    """A zoo entry name or a saved model file; returns (network, zoo benchmark or None)."""
    from jaxrepair import models, zoo

    if spec in zoo.ENTRIES:
        b = zoo.load(spec, progress=True)
        return b.model, b
    path = Path(spec)
    if path.exists():
        return models.load(path), None
    raise SystemExit(f"error: {spec!r} is neither a zoo entry ({', '.join(sorted(zoo.ENTRIES))}) nor a model file")


def _load_data(args, bench):
    if args.data:
        path = Path(args.data)
        if not path.exists():
            raise SystemExit(f"error: data file {path} does not exist")
        with np.load(path, allow_pickle=False) as z:
            batch = {k: z[k] for k in z.files}
    elif bench is not None:
        batch = dict(bench.splits[args.split])
    else:
        raise SystemExit("error: --data FILE.npz (with an 'x' array) is needed for a model file")
    if "x" not in batch:
        raise SystemExit(f"error: the data has no 'x' array (it has {sorted(batch)})")
    n = len(batch["x"])
    if args.samples and args.samples < n:
        idx = np.random.default_rng(args.seed).choice(n, args.samples, replace=False)
        batch = {k: v[idx] for k, v in batch.items()}
    return batch


def _parse_effect(spec: str, bench):
    """``fairness`` (zoo entry's attribute), ``fairness:COL:V1,V2[:TARGET]``, ``target:C[:prob]``, ``pair[:C]``."""
    from jaxrepair import causal

    kind, *rest = spec.split(":")
    if kind == "fairness":
        if not rest:
            if bench is None:
                raise SystemExit("error: effect 'fairness' without a column needs a zoo model; use fairness:COL:V1,V2")
            return causal.Fairness.make(bench.prop.column, bench.prop.values)
        target = int(rest[2]) if len(rest) > 2 else 1
        return causal.Fairness.make(int(rest[0]), [float(v) for v in rest[1].split(",")], target=target)
    if kind == "target":
        return causal.TargetOutput(int(rest[0]), rest[1] if len(rest) > 1 else "logit")
    if kind == "pair":
        return causal.CounterfactualPair(int(rest[0]) if rest else None)
    raise SystemExit(f"error: unknown effect {spec!r}; use fairness[:COL:V1,V2], target:C[:prob] or pair[:C]")


def _print_ranking(loc, k, score):
    from jaxrepair.records import markdown_table

    rows = [(i + 1, n.site, n.unit, n.score) for i, n in enumerate(loc.top(k, score))]
    table = markdown_table(["rank", "site", "unit", score], rows)
    print(table)
    return table


def cmd_localize(args):
    from jaxrepair import causal, records

    model, bench = _load_model(args.model)
    batch = _load_data(args, bench)
    effect = _parse_effect(args.effect, bench)
    t = time.perf_counter()
    loc = causal.ace(model, batch, effect, sites=args.sites, num_values=args.num_values, progress=True)
    elapsed = time.perf_counter() - t
    print(f"\nE[effect] without intervention: {loc.baseline:.5f}; {loc.num_samples} samples; {elapsed:.2f}s\n")
    table = _print_ranking(loc, args.top, args.score)
    out = records.new_run_dir(args.out, f"localize-{Path(args.model).stem}")
    rec = {"command": "localize", "model": args.model, "effect": args.effect, "score": args.score,
           "seed": args.seed, "environment": records.environment(), "localization": loc.to_json(top_k=args.top)}
    records.write_json(out / "localize.json", rec)
    records.write_text(out / "localize.md", f"# ACE localisation of {args.model}\n\n{table}")
    records.plot_scores(loc, out / "scores.png", score=args.score)
    print(f"wrote {out}/localize.json, localize.md, scores.png")


def cmd_demo(args):
    from jaxrepair import causal, records, zoo

    t0 = time.perf_counter()
    bench = zoo.load("census-sex", progress=True)
    m = bench.metrics
    print(f"\ncensus-sex: test accuracy {m['test_accuracy']:.4f}, individual-fairness violation (sex flip) "
          f"{m['fairness_violation_exhaustive']:.4f} on the test split "
          f"(sampled {m['fairness_violation_sampled']['rate']:.4f}, 95% CI {m['fairness_violation_sampled']['ci95'][0]:.4f}"
          f"-{m['fairness_violation_sampled']['ci95'][1]:.4f})\n")
    batch = dict(bench.splits["val"])
    idx = np.random.default_rng(0).choice(len(batch["x"]), 1000, replace=False)
    batch = {k: v[idx] for k, v in batch.items()}
    effect = causal.Fairness.make(bench.prop.column, bench.prop.values)
    loc = causal.ace(bench.model, batch, effect, progress=True)
    print(f"\nACE localisation (fairness effect, 1000 validation samples x 16 values, every hidden neuron):")
    table = _print_ranking(loc, 10, causal.DEFAULT_SCORE)
    out = records.new_run_dir(args.out, "demo")
    records.write_json(out / "demo.json", {"command": "demo", "model": "census-sex", "zoo": bench.model.meta.get("zoo"),
                                           "environment": records.environment(), "localization": loc.to_json()})
    records.write_text(out / "demo.md", f"# census-sex localisation\n\n{table}")
    records.plot_scores(loc, out / "scores.png")
    print(f"total {time.perf_counter() - t0:.1f}s; wrote {out}")


def cmd_bench(args):
    from jaxrepair import records
    from jaxrepair.bench import _ace

    if args.what != "ace":
        raise SystemExit(f"error: unknown benchmark {args.what!r}; available: ace")
    results = _ace.run(samples=args.samples, models_=args.models)
    if args.json:
        print(json.dumps({"benchmark": "ace", "environment": records.environment(), "results": results}, indent=2))


def cmd_zoo(args):
    from jaxrepair import zoo

    if args.action == "list":
        for name, e in zoo.ENTRIES.items():
            cached = (zoo.cache_dir() / f"{name}.npz").exists()
            what = {"fairness": lambda: f"sensitive={e.sensitive}", "backdoor": lambda: f"trigger->class {e.target}",
                    "safety": lambda: f"N{e.network[0]},{e.network[1]} phi{e.phi}"}[e.kind]()
            print(f"{name:18s} {e.kind:9s} data={e.dataset:7s} {what:22s} {'(cached)' if cached else ''}")
        return
    for name in args.names or sorted(zoo.ENTRIES):
        b = zoo.build(name, progress=True)
        m = {k: v for k, v in b.metrics.items() if k != "counterexamples"}
        print(json.dumps({"name": name, **m, "build_time_s": round(b.model.meta["zoo"]["build_time_s"], 2)}, indent=2))


def cmd_evaluate(args):
    from jaxrepair import zoo

    model, bench = _load_model(args.model)
    if bench is None:
        if not args.entry:
            raise SystemExit("error: a model file needs --entry ZOO_NAME to know its data and property")
        bench = zoo.load(args.entry)
    if args.property != "default" and args.property != bench.entry.kind:
        raise SystemExit(f"error: {bench.name} is a {bench.entry.kind} benchmark; --property {args.property} does not apply")
    print(json.dumps(zoo.evaluate(bench, model, seed=args.seed), indent=2))


def main(argv=None):
    p = argparse.ArgumentParser(prog="jaxrepair", description="Causality-driven neural-network repair in JAX")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="the end-to-end demo on census-sex")
    d.add_argument("--out", default="jaxrepair-out")
    d.set_defaults(fn=cmd_demo)

    lz = sub.add_parser("localize", help="ACE fault localisation")
    lz.add_argument("model", help="zoo entry name or model .npz")
    lz.add_argument("--data", help=".npz with x (and y, x_cf) arrays; default: the zoo entry's split")
    lz.add_argument("--split", default="val", choices=["train", "val", "test"])
    lz.add_argument("--effect", default="fairness", help="fairness[:COL:V1,V2[:TARGET]] | target:C[:prob] | pair[:C]")
    lz.add_argument("--sites", nargs="*", help="site names (default: hidden post-activation sites)")
    lz.add_argument("--samples", type=int, default=1000)
    lz.add_argument("--num-values", type=int, default=16)
    lz.add_argument("--score", default="interventional_change", choices=["interventional_change", "care_mean", "care_spread"])
    lz.add_argument("--top", type=int, default=10)
    lz.add_argument("--seed", type=int, default=0)
    lz.add_argument("--out", default="jaxrepair-out")
    lz.set_defaults(fn=cmd_localize)

    bn = sub.add_parser("bench", help="benchmarks (ace)")
    bn.add_argument("what", choices=["ace"])
    bn.add_argument("--samples", type=int, default=1000)
    bn.add_argument("--models", nargs="*", choices=["census-mlp", "wide-mlp"])
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(fn=cmd_bench)

    z = sub.add_parser("zoo", help="list or build zoo entries")
    z.add_argument("action", choices=["list", "build"])
    z.add_argument("names", nargs="*")
    z.set_defaults(fn=cmd_zoo)

    ev = sub.add_parser("evaluate", help="metrics of a model on its property")
    ev.add_argument("model")
    ev.add_argument("--entry", help="zoo entry whose data/property to use (for model files)")
    ev.add_argument("--property", default="default", choices=["default", "fairness", "backdoor", "safety"])
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(fn=cmd_evaluate)

    args = p.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, IndexError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
