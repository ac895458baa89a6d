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
    from jaxrepair import zoo

    if spec in zoo.ENTRIES:
        b = zoo.load(spec, progress=True)
        return b.model, b
    from jaxrepair import convert

    path = Path(spec)
    if path.exists():
        try:
            return convert.load_any(path), None
        except convert.ConversionError as e:
            raise SystemExit(f"error: {e}") from None
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


def _task_for(args, model, bench):
    from jaxrepair import repair, zoo

    if bench is None:
        if not getattr(args, "entry", None):
            raise SystemExit("error: a model file needs --entry ZOO_NAME to know its data and property")
        bench = zoo.load(args.entry)
    if args.property != "default" and args.property != bench.entry.kind:
        raise SystemExit(f"error: {bench.name} is a {bench.entry.kind} benchmark; --property {args.property} does not apply")
    return repair.from_zoo(bench, repair_samples=args.repair_samples, seed=args.seed), bench


def cmd_repair(args):
    from jaxrepair import records, repair

    model, bench = _load_model(args.model)
    task, bench = _task_for(args, model, bench)
    d = repair.DEFAULTS[task.kind]
    k = args.k or d["k"]
    if args.space == "delta":
        bounds = args.bounds[0] if args.bounds else None
    elif args.bounds:
        if len(args.bounds) != 2 or args.bounds[0] >= args.bounds[1]:
            raise SystemExit(f"error: factor --bounds needs LOW HIGH with LOW < HIGH, got {args.bounds}")
        bounds = tuple(args.bounds)
    else:
        bounds = d["bounds"]
    a = d["a"] if args.a is None else args.a
    out = records.new_run_dir(args.out, f"repair-{Path(args.model).stem}")
    if args.pareto:
        grid = [float(v) for v in args.pareto.split(",")]
        front = repair.pareto(model, task, a_values=grid, seeds=tuple(range(args.pareto_seeds)), k=k, score=args.score,
                              space=args.space, bounds=bounds, strategy=args.strategy, generations=args.generations,
                              population_size=args.population, progress=True, max_drop=args.max_drop)
        files = repair.write_pareto(front, out)
        print(open(files["markdown"]).read())
        print(f"wrote {out}")
        return
    t = time.perf_counter()
    if args.baseline in ("prune", "finetune-masked"):
        loc = repair.localize(model, task, sites=repair.candidate_sites(model), progress=True)
        top = loc.top(k, args.score)
        r = (repair.prune(model, task, top) if args.baseline == "prune"
             else repair.finetune(model, task, neurons=top, a=a, max_drop=args.max_drop))
        r.localization = loc
    elif args.baseline == "finetune-all":
        r = repair.finetune(model, task, a=a, max_drop=args.max_drop)
    else:
        r = repair.repair(model, task, k=k, score=args.score, space=args.space, bounds=bounds, strategy=args.strategy,
                          generations=args.generations, population_size=args.population, a=a, seed=args.seed,
                          max_drop=args.max_drop,
                          selection="random" if args.baseline == "random" else None, progress=True)
    files = repair.write_result(r, out, model_path=None if bench is not None and args.model == bench.name else args.model,
                                extra={"command": " ".join(sys.argv)})
    print()
    print(r.table())
    s = r.summary()
    red = s["violation_reduction"]
    print(f"{task.name}: violation {s['violation_before']:.4f} -> {s['violation_after']:.4f}"
          f" ({'n/a' if red is None else f'{100 * red:.1f}% lower'}), accuracy {s['accuracy_before']:.4f} ->"
          f" {s['accuracy_after']:.4f}; {time.perf_counter() - t:.1f}s")
    print(f"wrote {out} ({', '.join(Path(f).name for f in files.values())})")


def cmd_convert(args):
    import jax

    from jaxrepair import convert, models

    src = Path(args.model)
    if not src.exists():
        raise SystemExit(f"error: {src} does not exist")
    try:
        if args.state_dict_spec:
            if not args.input_shape:
                raise SystemExit("error: a state dict needs --input-shape (per example, PyTorch layout)")
            net = convert.from_state_dict(src, args.state_dict_spec, args.input_shape)
        else:
            kw = {"input_shape": args.input_shape} if args.input_shape else {}
            net = convert.from_onnx(src, **kw) if src.suffix.lower() == ".onnx" else convert.load_any(src)
    except convert.ConversionError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out) if args.out else src.with_name(src.stem + (".onnx" if args.to == "onnx" else ".nnet" if args.to == "nnet" else ".npz"))
    if args.to == "onnx":
        convert.to_onnx(net, out)
    elif args.to == "nnet":
        convert.to_nnet(net, out)
    else:
        models.save(net, out)
    info = models.sites(net)
    print(f"{src} -> {out}: {len(net.graph.nodes)} nodes, input {net.input_shape}, output {info[net.graph.output].shape}, "
          f"{sum(int(np.size(v)) for p in net.params().values() for v in p.values())} parameters")
    if args.verify and src.suffix.lower() == ".onnx":
        import onnx
        from onnx.reference import ReferenceEvaluator

        m = onnx.load(str(src))
        x = np.asarray(jax.random.normal(jax.random.key(args.seed), (8, *net.input_shape)), np.float32)
        ref = ReferenceEvaluator(m).run(None, {net.meta["onnx"]["input"]: x})[0]
        err = float(np.max(np.abs(np.asarray(net(x)) - ref)))
        print(f"verify: max |jaxrepair - onnx reference| on 8 random inputs = {err:.3g}")
        if err > 1e-4 * max(1.0, float(np.max(np.abs(ref)))):
            raise SystemExit("error: the converted model disagrees with the ONNX reference evaluator")


def cmd_demo(args):
    from jaxrepair import records, repair, zoo

    t0 = time.perf_counter()
    bench = zoo.load("census-sex", progress=True)
    m = bench.metrics
    print(f"\ncensus-sex: test accuracy {m['test_accuracy']:.4f}, individual-fairness violation (sex flip) "
          f"{m['fairness_violation_exhaustive']:.4f} on the test split "
          f"(sampled {m['fairness_violation_sampled']['rate']:.4f}, 95% CI {m['fairness_violation_sampled']['ci95'][0]:.4f}"
          f"-{m['fairness_violation_sampled']['ci95'][1]:.4f})\n")
    task = repair.from_zoo(bench, repair_samples=args.repair_samples)
    d = repair.DEFAULTS["fairness"]
    loc = repair.localize(bench.model, task, sites=repair.candidate_sites(bench.model), progress=True)
    print(f"\nACE localisation (fairness effect, {args.repair_samples} repair-split samples x 16 values, every hidden neuron):")
    _print_ranking(loc, d["k"], "interventional_change")
    r = repair.repair(bench.model, task, k=d["k"], bounds=d["bounds"], a=d["a"], strategy="pso", localization=loc,
                      progress=True)
    r.timings["localize"] = sum(loc.timings.values())
    out = records.new_run_dir(args.out, "demo")
    repair.write_result(r, out, extra={"command": "demo"})
    print(f"\nRepair of census-sex (PSO, CARE settings, top-{d['k']} ACE neurons; test split):\n")
    print(r.table())
    s = r.summary()
    print(f"fairness violation {100 * s['violation_reduction']:.1f}% lower, accuracy change "
          f"{-s['accuracy_drop_points']:+.2f} points; total {time.perf_counter() - t0:.1f}s; wrote {out}")


def cmd_bench(args):
    from jaxrepair import records

    if args.what == "ace":
        from jaxrepair.bench import _ace

        results = _ace.run(samples=args.samples, models_=args.models)
    else:
        from jaxrepair.bench import _repair

        results = _repair.run(entries=args.entries)
    if args.json:
        print(json.dumps({"benchmark": args.what, "environment": records.environment(), "results": results}, indent=2))


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

    d = sub.add_parser("demo", help="the end-to-end demo: build census-sex, localise, repair, before/after")
    d.add_argument("--out", default="jaxrepair-out")
    d.add_argument("--repair-samples", type=int, default=5000)
    d.set_defaults(fn=cmd_demo)

    rp = sub.add_parser("repair", help="localise with ACE and repair with an evosax strategy (or a baseline)")
    rp.add_argument("model", help="zoo entry name or model file: .npz, .onnx, .keras/.h5, .nnet (with --entry for its data and property)")
    rp.add_argument("--entry", help="zoo entry whose data and property to use (for model files)")
    rp.add_argument("--property", default="default", choices=["default", "fairness", "backdoor", "safety"])
    rp.add_argument("--strategy", default="pso", help="pso (CARE settings) | care | cma_es | de | snes | open_es")
    rp.add_argument("--space", default="factor", choices=["factor", "delta"])
    rp.add_argument("--k", type=int, help="neurons to repair (default per kind: fairness 10, backdoor 5, safety 25)")
    rp.add_argument("--a", type=float, help="weight of 1-accuracy in (1-a)*violation + a*(1-accuracy)")
    rp.add_argument("--bounds", type=float, nargs="+", help="factor LOW HIGH, or delta bound (x layer std)")
    rp.add_argument("--max-drop", type=float, help="accuracy budget as a fraction (0.01 = 1 point): penalised in the "
                    "search, enforced when the result is chosen on the select split")
    rp.add_argument("--generations", type=int)
    rp.add_argument("--population", type=int)
    rp.add_argument("--score", default="interventional_change", choices=["interventional_change", "care_mean", "care_spread"])
    rp.add_argument("--baseline", choices=["random", "prune", "finetune-all", "finetune-masked"],
                    help="run a baseline instead of ACE selection + search")
    rp.add_argument("--pareto", help="comma-separated a values: one vmapped run, non-dominated front")
    rp.add_argument("--pareto-seeds", type=int, default=1)
    rp.add_argument("--repair-samples", type=int, default=5000)
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--out", default="jaxrepair-out")
    rp.set_defaults(fn=cmd_repair)

    cv = sub.add_parser("convert", help="convert ONNX/Keras/.nnet/state-dict models to jaxrepair (.npz), ONNX or .nnet")
    cv.add_argument("model", help=".onnx, .keras, .h5, .nnet[.xz], .npz, or a state dict (.pt/.pth/.safetensors/.npz) with --spec")
    cv.add_argument("--to", default="jaxrepair", choices=["jaxrepair", "onnx", "nnet"])
    cv.add_argument("--out", help="output file (default: next to the input; never overwritten)")
    cv.add_argument("--spec", dest="state_dict_spec", nargs="+", help="sequential spec for a state dict, e.g. Linear ReLU Linear")
    cv.add_argument("--input-shape", type=int, nargs="+", help="per-example input shape (dynamic ONNX inputs, state dicts)")
    cv.add_argument("--verify", action="store_true", help="compare with onnx's reference evaluator on random inputs")
    cv.add_argument("--seed", type=int, default=0)
    cv.set_defaults(fn=cmd_convert)

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

    bn = sub.add_parser("bench", help="benchmarks: ace (localisation), repair (population fitness)")
    bn.add_argument("what", choices=["ace", "repair"])
    bn.add_argument("--samples", type=int, default=1000, help="ace: samples per neuron and value")
    bn.add_argument("--entries", nargs="*", choices=["census-sex", "digits-badnets"], help="repair: zoo entries")
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
    except (ValueError, IndexError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
