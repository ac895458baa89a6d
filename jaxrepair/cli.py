"""The ``jaxrepair`` command: a thin layer over the library.

Exit codes: 0 the work succeeded; 1 the work failed (a result could not be computed or checked);
2 bad input (an argument, a config, a file), reported before any work starts; 130 interrupted
(Ctrl-C), without a traceback. ``JAXREPAIR_DEBUG=1`` shows the traceback of a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: ``verify --exit-code``: the verdict as the exit status, for scripts (without it a decided run exits 0).
VERDICT_EXIT = {"safe": 0, "unsafe": 10, "unknown": 20}


class UsageError(ValueError):
    """Bad input on the command line (exit code 2)."""


def _int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in ``[lo, hi]`` (the message names the range)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {'at least ' + str(lo) if hi is None else f'in {lo}..{hi}'}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def _float_in(lo: float, hi: float | None = None, *, open_low: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not np.isfinite(v) or v < lo or (open_low and v == lo) or (hi is not None and v > hi):
            where = f"in [{lo}, {hi}]" if hi is not None else (f"> {lo}" if open_low else f">= {lo}")
            raise argparse.ArgumentTypeError(f"must be a number {where}, got {text}")
        return v
    parse.__name__ = "number"
    return parse


def _a_values(text: str) -> list[float]:
    """``--pareto``: comma-separated values of ``a`` in [0, 1]."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1], got {text!r}") from None
    bad = [v for v in vals if not 0.0 <= v <= 1.0]
    if not vals or bad:
        raise argparse.ArgumentTypeError(f"every a must be in [0, 1], got {text!r}")
    return vals


def _names(text: str) -> tuple[str, ...]:
    """``--objectives``: comma-separated names (checked by the library before any work)."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


POS = _int_in(1)
SEED = _int_in(0, 2**31 - 1)


def _method_option(text: str) -> tuple:
    """``METHOD:NAME=VALUE`` -> ``(method, name, value)``; the value read as JSON (1.0, 3, true, [5, 10])
    where it parses, else as a string."""
    method, sep, rest = text.partition(":")
    name, eq, value = rest.partition("=")
    if not (sep and eq and method and name and value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected METHOD:NAME=VALUE, e.g. ace-finetune:preserve=1.0")
    try:
        return method, name, json.loads(value)
    except json.JSONDecodeError:
        return method, name, value


def _load_model(spec: str, args=None):
    """A zoo entry name or a saved model file; returns (network, zoo benchmark or None)."""
    from jaxrepair import zoo

    if spec in zoo.ENTRIES:
        b = zoo.load(spec, progress=True, data_dir=getattr(args, "data_dir", None))
        return b.model, b
    from jaxrepair import convert

    path = Path(spec)
    if path.exists():
        try:
            return convert.load_any(path), None
        except convert.ConversionError as e:
            raise UsageError(f"{e}") from None
    from jaxrepair.records import did_you_mean

    raise UsageError(f"{spec!r} is neither a zoo entry{did_you_mean(spec, zoo.ENTRIES)} ({', '.join(sorted(zoo.ENTRIES))}) "
                     f"nor a model file")


def _is_table(args) -> bool:
    """``--data`` names a table to read with its label (a .csv, or any file with ``--sensitive``)."""
    return bool(args.data) and (Path(args.data).suffix.lower() == ".csv" or bool(getattr(args, "sensitive", None)))


def _all_rows(ds) -> dict:
    """Every row of the user's table, its splits joined: ``{"x", "y"}``."""
    return {"x": np.concatenate([s.x for s in ds.splits.values()]), "y": np.concatenate([s.y for s in ds.splits.values()])}


def _load_data(args, bench, ds=None):
    """The batch a command analyses: ``ds`` (the user's table, read once by the caller), an .npz
    ``--data`` file, or the zoo entry's split; subsampled to ``--samples``."""
    if ds is not None:
        batch = _all_rows(ds)
    elif args.data:
        path = Path(args.data)
        if not path.is_file():
            raise UsageError(f"data file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                batch = {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise UsageError(f"{path}: not a readable .npz file ({e})") from None
    elif bench is not None:
        batch = dict(bench.splits[args.split])
    else:
        raise UsageError("--data FILE.npz (with an 'x' array) is needed for a model file")
    if "x" not in batch:
        raise UsageError(f"the data has no 'x' array (it has {sorted(batch)})")
    n = len(batch["x"])
    if n == 0:
        raise UsageError("the data set is empty")
    if args.samples and args.samples < n:
        idx = np.random.default_rng(args.seed).choice(n, args.samples, replace=False)
        batch = {k: v[idx] for k, v in batch.items()}
    return batch


def _user_table(args):
    """The user's ``--data`` table (.csv, or .npz with a label array), or None without ``--data``;
    says how it was read (rows, categorical columns, dropped rows, the split) and saves the split's
    row indices with ``--save-split``."""
    from jaxrepair import data, records, repair

    if not getattr(args, "data", None):
        return None
    save = getattr(args, "save_split", None)
    if save and Path(save).exists():
        raise UsageError(f"--save-split {save}: the file exists; name a new file (nothing is overwritten)")
    ds = data.load_user_table(args.data, label=args.label, sensitive=getattr(args, "sensitive", None),
                              missing=getattr(args, "missing", "error"), categorical=getattr(args, "categorical", None) or (),
                              split_seed=getattr(args, "split_seed", 0))
    n = sum(len(v.y) for v in ds.splits.values())
    cats = ", ".join(sorted(ds.categories)) or "none"
    dropped = f", {len(ds.dropped)} dropped for a missing cell" if ds.dropped else ""
    print(f"read {args.data}: {n} rows{dropped}, {len(ds.columns)} features, label {ds.label!r}; read as categorical "
          f"(integer codes): {cats}", file=sys.stderr)
    print(f"split seed {ds.split_seed}: {' / '.join(f'{k} {len(v.y)}' for k, v in ds.splits.items())} rows "
          f"(repair / select / test); figures on the table are on {repair.rows_note(ds, 'test')}"
          + (f"; row indices in {save}" if save else " (--save-split FILE writes the row indices)"), file=sys.stderr)
    if save:
        records.write_json(save, {"data": str(args.data), **ds.split_record()})
    return ds


def _sensitive_spec(args) -> str:
    """``--sensitive``, which fairness on the user's own table needs."""
    if not args.sensitive:
        raise UsageError("fairness on your own data needs --sensitive COL[:V1,V2,...] (a column name or index)")
    return args.sensitive


def _sensitive(args, ds) -> tuple[str, int, list[float]]:
    """``(name, column, values)`` of ``--sensitive COL[:V1,V2]`` in the user's table."""
    from jaxrepair import repair

    return repair.table_sensitive(ds, _sensitive_spec(args))


def _user_task(args, model, ds):
    """A fairness repair task on the user's table: repair / select / test = its train / val / test split."""
    from jaxrepair import repair

    return repair.table_task(model, ds, _sensitive_spec(args), where=args.data)


def _parse_effect(spec: str, bench):
    """``fairness`` (zoo entry's attribute), ``fairness:COL:V1,V2[:TARGET]``, ``target:C[:prob]``, ``pair[:C]``.
    Class and column indices are checked against the model when the localisation starts."""
    from jaxrepair import causal

    usage = "use fairness[:COL:V1,V2[:CLASS]], target:CLASS[:logit|prob] or pair[:CLASS]"
    kind, *rest = spec.split(":")

    def index(text, what):
        if not text.strip().isdigit():
            raise UsageError(f"--effect {spec!r}: {what} must be a non-negative integer, got {text!r}; {usage}")
        return int(text)

    if kind == "fairness":
        if not rest:
            if bench is None or bench.entry.kind != "fairness":
                raise UsageError(f"--effect fairness without a column needs a fairness zoo entry; {usage}")
            return causal.Fairness.make(bench.prop.column, bench.prop.values)
        if len(rest) not in (2, 3):
            raise UsageError(f"--effect {spec!r}: fairness needs a column and its values; {usage}")
        try:
            values = [float(v) for v in rest[1].split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--effect {spec!r}: the values must be numbers, got {rest[1]!r}") from None
        if len(set(values)) < 2:
            raise UsageError(f"--effect {spec!r}: a sensitive attribute needs at least two distinct values")
        target = index(rest[2], "the class") if len(rest) == 3 else 1
        return causal.Fairness.make(index(rest[0], "the column"), values, target=target)
    if kind == "target":
        if len(rest) not in (1, 2) or (len(rest) == 2 and rest[1] not in ("logit", "prob")):
            raise UsageError(f"--effect {spec!r}: {usage}")
        return causal.TargetOutput(index(rest[0], "the class"), rest[1] if len(rest) > 1 else "logit")
    if kind == "pair":
        if len(rest) > 1:
            raise UsageError(f"--effect {spec!r}: {usage}")
        return causal.CounterfactualPair(index(rest[0], "the class") if rest else None)
    raise UsageError(f"unknown effect {spec!r}; {usage}")


def _print_ranking(loc, k, score):
    from jaxrepair.records import markdown_table

    rows = [(i + 1, n.site, n.unit, n.score) for i, n in enumerate(loc.top(k, score))]
    table = markdown_table(["rank", "site", "unit", score], rows)
    print(table)
    return table


def cmd_localize(args):
    from jaxrepair import causal, records

    model, bench = _load_model(args.model, args)
    if args.method == "interchange":
        return _localize_interchange(args, model, bench)
    ds = _user_table(args) if _is_table(args) else None
    batch = _load_data(args, bench, ds)
    if args.sensitive and ds is not None:
        _, col, values = _sensitive(args, ds)
        effect = causal.Fairness.make(col, values)
    else:
        effect = _parse_effect(args.effect, bench)
    t = time.perf_counter()
    loc = causal.ace(model, batch, effect, sites=args.sites, num_values=args.num_values, progress=True,
                     devices=args.devices, data_parallel=args.data_parallel)
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
    return rec


def _localize_interchange(args, model, bench):
    from jaxrepair import causal, records, repair

    if args.data:
        batch = _load_data(args, bench)
        if "x_cf" not in batch:
            raise UsageError("interchange needs pairs: the data file must hold 'x' and 'x_cf'")
        x, x_cf = batch["x"], batch["x_cf"]
    elif bench is not None:
        x, x_cf = repair.interchange_pairs(repair.from_zoo(bench, seed=args.seed))
        if args.samples and args.samples < len(x):
            x, x_cf = x[: args.samples], x_cf[: args.samples]
    else:
        raise UsageError("--data FILE.npz with 'x' and 'x_cf' arrays is needed for a model file")
    t = time.perf_counter()
    loc = causal.interchange(model, x, x_cf, sites=args.sites)
    print(f"\n{len(x)} pairs; mean squared output difference {loc.total_difference:.5f}; {time.perf_counter() - t:.2f}s\n")
    table = _print_ranking(loc, args.top, "restored")
    out = records.new_run_dir(args.out, f"interchange-{Path(args.model).stem}")
    rec = {"command": "localize --method interchange", "model": args.model, "seed": args.seed,
           "environment": records.environment(), "localization": loc.to_json(top_k=args.top)}
    records.write_json(out / "localize.json", rec)
    records.write_text(out / "localize.md", f"# Interchange-intervention localisation of {args.model}\n\n{table}")
    records.plot_scores(loc, out / "scores.png", score="restored")
    print(f"wrote {out}/localize.json, localize.md, scores.png")
    return rec


def _fairness_bench(args, what: str):
    from jaxrepair import zoo

    if args.model not in zoo.ENTRIES or zoo.ENTRIES[args.model].kind != "fairness":
        fair = sorted(n for n, e in zoo.ENTRIES.items() if e.kind == "fairness")
        raise UsageError(f"{what} runs on a fairness zoo entry ({', '.join(fair)}); got {args.model!r}")
    return zoo.load(args.model, progress=True, data_dir=getattr(args, "data_dir", None))


def cmd_features(args):
    from jaxrepair import causal, records

    model, bench = _load_model(args.model, args)
    ds = _user_table(args) if _is_table(args) else None
    batch = _load_data(args, bench, ds)
    names = None
    if ds is not None:
        names = ds.columns
    elif bench is not None and bench.entry.kind == "fairness":
        from jaxrepair import data

        names = data.load_tabular(bench.entry.dataset).columns
    x = np.asarray(batch["x"], np.float32).reshape(len(batch["x"]), -1)
    if tuple(model.input_shape) != (x.shape[1],):
        raise UsageError(f"input-feature ACE needs a model with a flat input; {args.model} takes {model.input_shape}")
    res = causal.input_ace(model, x, feature_names=names, num_values=args.num_values, method=args.method)
    from jaxrepair.records import markdown_table

    rank = res.ranking(args.output)
    table = markdown_table(["rank", "feature", f"ACE spread (output {args.output})"], [(i + 1, n, v) for i, (n, v) in enumerate(rank[: args.top])])
    print(table)
    out = records.new_run_dir(args.out, f"features-{Path(args.model).stem}")
    rec = {"command": "features", "model": args.model, "seed": args.seed, "environment": records.environment(),
           "input_ace": res.to_json()}
    records.write_json(out / "features.json", rec)
    records.write_text(out / "features.md", f"# Input-feature ACE of {args.model} ({args.method})\n\n{table}")
    causal.plot_input_ace(res, out / "features.png", output=args.output)
    print(f"wrote {out}/features.json, features.md, features.png ({res.timings['ace']:.2f}s)")
    return rec


def _fairness_setup(args, what: str):
    """``(model, dataset, task or None, attribute, values, name)`` from a fairness zoo entry, or from a
    model file with ``--data`` / ``--label`` / ``--sensitive``."""
    from jaxrepair import data, repair

    ds = _user_table(args)
    if ds is not None:
        model, bench = _load_model(args.model, args)
        if bench is not None:
            raise UsageError("--data gives your own data; use it with a model file, not a zoo entry")
        task = _user_task(args, model, ds)
        attr, _, values = _sensitive(args, ds)
        return model, ds, task, attr, values, Path(args.model).stem
    bench = _fairness_bench(args, what)
    ds = data.load_tabular(bench.entry.dataset)
    task = repair.from_zoo(bench, repair_samples=args.repair_samples, seed=args.seed) if what == "feature-repair" else None
    attr = bench.entry.sensitive
    return bench.model, ds, task, attr, [float(v) for v in ds.sensitive_values(attr)], bench.name


def cmd_cf_fairness(args):
    import jax

    from jaxrepair import causal, records

    out = records.new_run_dir(args.out, "cf-fairness")
    model, ds, _, attr, values, name = _fairness_setup(args, "cf-fairness")
    scm = causal.fit_default(ds, equations=args.equations, key=jax.random.key(args.seed))
    res = causal.counterfactual_fairness(model, scm, ds.splits["test"].x, attr, values)
    print(_dumps(res))
    out = out.with_name(out.name.replace("cf-fairness", f"cf-fairness-{name}", 1))
    records.write_json(out / "cf-fairness.json", {"command": "cf-fairness", "model": args.model, "scm": scm.to_json(),
                                                  "environment": records.environment(), **res})
    print(f"wrote {out}/cf-fairness.json")
    return res


def cmd_feature_repair(args):
    import jax

    from jaxrepair import causal, feature, records, repair

    out = records.new_run_dir(args.out, "feature-repair")
    model, ds, task, attr, values, name = _fairness_setup(args, "feature-repair")
    scm = None if args.flip else causal.fit_default(ds, equations=args.equations, key=jax.random.key(args.seed))
    t = time.perf_counter()
    r = feature.counterfactual_training(model, task, attribute=attr, values=values, columns=ds.columns, scm=scm,
                                        mode=args.method, lam=args.lam, steps=args.steps,
                                        max_drop=None if args.max_drop == NO_BUDGET else args.max_drop,
                                        seed=args.seed)
    out = out.with_name(out.name.replace("feature-repair", f"feature-repair-{name}", 1))
    files = repair.write_result(r, out, extra={"command": " ".join(sys.argv)})
    record = {**r.to_json(), "files": files}
    print(r.table())
    extra = ""
    if "counterfactual_violation" in r.after:
        extra = f", counterfactual violation {r.before['counterfactual_violation']:.4f} -> {r.after['counterfactual_violation']:.4f}"
    print(f"{task.name} ({r.method}): violation {r.before['violation']:.4f} -> {r.after['violation']:.4f}{extra}, "
          f"accuracy {r.before['accuracy']:.4f} -> {r.after['accuracy']:.4f}; {time.perf_counter() - t:.1f}s")
    if r.after.get("degenerate"):
        print(f"WARNING: the repaired model is degenerate: {r.after['degenerate']}", file=sys.stderr)
    _print_wrote(out, files.values())
    return record


def _benchmark_record(args, name, res, table):
    from jaxrepair import records

    out = records.new_run_dir(args.out, name)
    records.write_json(out / f"{name}.json", {"command": name, "environment": records.environment(), **res})
    record = {"command": name, **res}
    records.write_text(out / f"{name}.md", f"# {name}\n\n{table}")
    print(table)
    print(f"wrote {out}/{name}.json, {name}.md")
    return record


def cmd_irm(args):
    from jaxrepair import feature
    from jaxrepair.records import markdown_table

    res = feature.irm_benchmark(seeds=tuple(range(args.seeds)), penalty_weight=args.penalty, steps=args.steps, progress=True)
    rows = [(m, v["train_accuracy"], v["test_accuracy"]) for m, v in res["summary"].items()]
    return _benchmark_record(args, "irm", res, markdown_table(["method", "train accuracy (envs e=0.1, 0.2)", "test accuracy (e=0.9)"], rows))


def cmd_tde(args):
    from jaxrepair import feature
    from jaxrepair.records import markdown_table

    res = feature.tde_benchmark(seeds=tuple(range(args.seeds)), ratio=args.ratio, progress=True)
    rows = [(m, v["overall"], v["head"], v["medium"], v["tail"]) for m, v in res["summary"].items()]
    return _benchmark_record(args, "tde", res, markdown_table(["method", "overall", "head", "medium", "tail"], rows))


def _task_for(args, model, bench):
    from jaxrepair import repair, zoo

    ds = _user_table(args)
    if ds is not None:
        if bench is not None:
            raise UsageError("--data gives your own data; use it with a model file, not a zoo entry")
        if args.property not in ("default", "fairness"):
            raise UsageError(f"--property {args.property} on your own data: only fairness (with --sensitive) is supported")
        return _user_task(args, model, ds), None, ds
    if bench is None:
        if not getattr(args, "entry", None):
            raise UsageError("a model file needs --entry ZOO_NAME, or --data FILE with --label and --sensitive, "
                             "to know its data and property")
        bench = zoo.load(args.entry, data_dir=getattr(args, "data_dir", None))
    if args.property != "default" and args.property != bench.entry.kind:
        raise UsageError(f"{bench.name} is a {bench.entry.kind} benchmark; --property {args.property} does not apply")
    return repair.from_zoo(bench, repair_samples=args.repair_samples, seed=args.seed), bench, None


def _bounds(args):
    if not args.bounds:
        return None
    if not all(np.isfinite(args.bounds)):
        raise UsageError(f"--bounds must be finite numbers, got {args.bounds}")
    if args.space == "delta":
        if len(args.bounds) != 1 or args.bounds[0] <= 0:
            raise UsageError(f"delta --bounds takes one positive number (x layer std), got {args.bounds}")
        return args.bounds[0]
    if len(args.bounds) != 2 or args.bounds[0] >= args.bounds[1]:
        raise UsageError(f"factor --bounds needs LOW HIGH with LOW < HIGH, got {args.bounds}")
    return tuple(args.bounds)


NO_BUDGET = "none"


def _budget(value):
    """The library's ``max_drop`` for a parsed ``--max-drop``: absent = the preset's, ``none`` = no budget."""
    from jaxrepair import repair

    return repair.FROM_PRESET if value is None else (None if value == NO_BUDGET else value)


def _max_drop(value: str):
    """``--max-drop``: a fraction, or ``none`` for no budget (kept apart from "not given", which means
    the preset's budget)."""
    if value.lower() == "none":
        return NO_BUDGET
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction (0.01 = one point) or 'none', got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be an accuracy fraction in [0, 1] (0.01 = one point), got {value}")
    return v


def _registered(args):
    """The registered method ``--method`` / ``--baseline`` names (None for the preset's repair), every
    flag it cannot take refused before any work."""
    from jaxrepair import repair

    if args.method and args.baseline:
        raise UsageError(f"--method {args.method} and --baseline {args.baseline}: choose one")
    name = args.method or _BASELINES.get(args.baseline)
    if name is None:
        return None
    m = repair.get_method(name)  # an unknown name: a clear error
    if args.pareto and m.front is None:
        raise UsageError(f"--pareto draws a method's front; {name!r} makes one repair and has none (methods with "
                         f"fronts: {', '.join(n for n, x in repair.METHODS.items() if x.front is not None)})")
    fixed = {"--preset": args.preset, "--score": args.score, "--strategy": args.strategy,
             "--certify": args.certify or None, "--localizer": args.localizer}
    bad = [flag for flag, v in fixed.items() if v is not None]
    if bad:
        raise UsageError(f"{'--method ' + name if args.method else '--baseline ' + args.baseline} runs the registered "
                         f"method {name!r} with its own preset, score, strategy and localiser; {', '.join(bad)} "
                         f"cannot be combined with it (`jaxrepair methods` lists the methods and what they do)")
    return m


def _method_options(method, args, task) -> dict:
    """The options given on the command line that a registered method takes (others refused)."""
    from jaxrepair import repair

    given = {"k": args.k, "a": args.a, "generations": args.generations, "population_size": args.population,
             "space": args.space, "bounds": _bounds(args), "objectives": args.objectives}
    if args.baseline == "finetune-masked":  # the ACE top-k's weights alone: one k
        given = {"k_values": (args.k or repair.preset_for(task.kind).k,), "a": args.a}
    opts = {k: v for k, v in given.items() if v is not None}
    if args.max_drop is not None:
        opts["max_drop"] = _budget(args.max_drop)
    refused = sorted(set(opts) - set(method.options))
    if refused:
        raise UsageError(f"--method {method.name} takes none of the options {refused}; it takes "
                         f"{sorted(method.options)}")
    return opts


def _chosen_methods(args):
    """``--choose A,B``: the registered methods to run, each for the task's kind; the flags that set one
    method's search refused (each runs with its own settings)."""
    from jaxrepair import repair

    methods = [repair.get_method(n) for n in args.choose]
    fixed = {"--method": args.method, "--baseline": args.baseline, "--preset": args.preset, "--strategy": args.strategy,
             "--pareto": args.pareto, "--certify": args.certify or None, "--k": args.k, "--a": args.a,
             "--generations": args.generations, "--population": args.population}
    bad = [flag for flag, v in fixed.items() if v is not None]
    if bad:
        raise UsageError(f"--choose runs each method with its own settings; {', '.join(bad)} cannot be combined with it")
    return methods


def _repair_chosen(args, model, task, methods):
    """The demo's mode: every method run, the one chosen on the select split (lowest violation within
    the budget, not degenerate) written; the test split is not looked at to choose."""
    from jaxrepair import repair

    budget = 0.01 if args.max_drop is None else 1.0 if args.max_drop == NO_BUDGET else args.max_drop
    results = [m(model, task, seed=args.seed) for m in methods]
    best, rows = repair.choose(model, task, results, max_drop=budget)
    pts = f"{100 * budget:g} point{'' if budget == 0.01 else 's'}"
    print(f"\nCandidates on the select split (chosen within {pts}; the test split is not looked at):")
    for m, row in zip(methods, rows):
        print(f"  {m.name:24s} violation {row['select_violation']:.4f}, accuracy {row['select_accuracy']:.4f}"
              f"{'' if row['within_budget'] else '  (over the budget or degenerate)'}")
    if best is None:
        raise RuntimeError(f"no method of {[m.name for m in methods]} stayed within {pts} of "
                           f"accuracy on the select split; nothing was written as a repair")
    return best, rows


def cmd_repair(args):
    from jaxrepair import records, repair

    chosen = _chosen_methods(args) if args.choose else None
    method = _registered(args) if chosen is None else None
    model, bench = _load_model(args.model, args)
    task, bench, table = _task_for(args, model, bench)
    wrong = [m.name for m in chosen or () if task.kind not in m.kinds]
    if wrong:
        raise UsageError(f"--choose: {wrong} do not repair {task.kind} tasks (`jaxrepair methods --kind {task.kind}`)")
    whole = model
    if args.after:  # repair only the layers after this site (jr.repair.lower); the whole network is written
        model, task = repair.lower(whole, task, args.after)
    max_drop = _budget(args.max_drop)
    if method is None:  # the strategy, its budget and objectives: checked before the output directory exists
        strat = repair.get_strategy(args.strategy or repair.preset_for(task.kind, args.preset).strategy,
                                    generations=args.generations, population_size=args.population,
                                    objectives=args.objectives)
        if args.objectives and not strat.multi_objective:
            raise UsageError(f"--objectives are what nsga2/nsga3 minimise; strategy {strat.name!r} minimises one "
                             f"scalar fitness")
    out = records.new_run_dir(args.out, f"repair-{Path(args.model).stem}")
    if table is not None:  # which rows of the user's file each split is
        records.write_json(out / "split.json", {"data": str(args.data), **table.split_record()})
    common = dict(preset=args.preset, k=args.k, score=args.score, space=args.space, bounds=_bounds(args),
                  strategy=args.strategy, generations=args.generations, population_size=args.population,
                  max_drop=max_drop, objectives=args.objectives, progress=True)
    opts = _method_options(method, args, task) if method is not None else None
    if args.pareto:
        seeds = tuple(range(args.pareto_seeds))
        if method is not None:
            front = repair.pareto(model, task, method=method.name, a_values=args.pareto, seeds=seeds,
                                  **{k: v for k, v in opts.items() if k != "a"})
        else:
            front = repair.pareto(model, task, a_values=args.pareto, seeds=seeds, localizer=args.localizer, **common)
        files = repair.write_pareto(front, out)
        record = {**front, "files": files}
        print(open(files["markdown"]).read())
        print(f"wrote {out}")
        return record
    t = time.perf_counter()
    candidates = None
    if chosen is not None:
        r, candidates = _repair_chosen(args, model, task, chosen)
    elif method is not None:
        r = method(model, task, seed=args.seed, **opts)
    else:
        r = repair.repair(model, task, a=args.a, seed=args.seed, localizer=args.localizer, devices=args.devices,
                          certify=args.certify, verify_timeout=args.verify_timeout,
                          certify_bound_steps=args.certify_bound_steps, **common)
    if args.after:
        from jaxrepair import models

        r.model = models.attach(whole, r.model)
    files = repair.write_result(r, out, model_path=None if bench is not None and args.model == bench.name else args.model,
                                extra={"command": " ".join(sys.argv)})
    record = {**r.to_json(), "files": files, **({"chosen_on_select": candidates} if candidates else {})}
    print()
    print(r.table())
    s = r.summary()
    _print_summary(task.name, s, time.perf_counter() - t)
    record["locality"] = _print_locality(model, r)
    _print_budget_note(r, task)
    _print_wrote(out, files.values())
    return record


#: ``--baseline NAME``: the registered method it runs (``finetune-masked``: ace-finetune with one k).
_BASELINES = {"random": "random-pso", "prune": "prune", "finetune-all": "finetune-all", "finetune-masked": "ace-finetune"}


def _dumps(obj) -> str:
    from jaxrepair import records

    return records.dumps(obj)


def _print_wrote(out: Path, files) -> None:
    """``wrote RUN (a, b, ...)`` for the run folder's files; a file elsewhere (beside the input model)
    on its own line with its whole path."""
    inside = sorted({p.name for p in Path(out).iterdir() if p.is_file()}) if Path(out).is_dir() else []
    print(f"wrote {out} ({', '.join(inside)})")
    for f in files:
        if Path(f).resolve().parent != Path(out).resolve():
            print(f"wrote {f} (beside the input model, not in the run folder)")


def _print_locality(model, r) -> dict:
    """``localised: 10 of 124 hidden units (8%)``, called what it is once more than half are in play."""
    from jaxrepair import repair

    loc = repair.locality(model, r)
    what = "localised" if loc["local"] else "NOT local"
    print(f"{what}: the repair changes {loc['units_changed']} of {loc['hidden_units']} hidden units "
          f"({100 * loc['share']:.0f}%)" + ("" if loc["local"] else "; more than half the network's units"))
    return loc


def _print_budget_note(r, task) -> None:
    """Where the figures were measured, and that the budget holds on the select split only."""
    n_test = len(task.data["test"]["accuracy"]["y"])
    budget = r.config.get("max_drop") if isinstance(getattr(r, "config", None), dict) else None
    what = f"the accuracy budget (at most {100 * budget:.2g} points lost)" if isinstance(budget, (int, float)) else \
        "any accuracy budget"
    print(f"figures on the test split ({n_test} rows); {what} is enforced on the select split, where the repair is "
          f"chosen, so the test split can lose more")


def _print_summary(name: str, s: dict, seconds: float) -> None:
    """The one-line before/after summary; a degenerate result is called what it is, never a success."""
    red = s["violation_reduction"]
    change = "n/a" if red is None else f"{100 * red:.1f}% lower" if red >= 0 else f"{-100 * red:.1f}% higher"
    if s.get("degenerate"):
        change = f"not a repair: {s['degenerate']}"
    print(f"{name}: violation {s['violation_before']:.4f} -> {s['violation_after']:.4f} ({change}), accuracy "
          f"{s['accuracy_before']:.4f} -> {s['accuracy_after']:.4f}; {seconds:.1f}s")
    for when in ("degenerate_before", "degenerate"):
        if s.get(when):
            print(f"WARNING: the model {'before' if when.endswith('before') else 'after'} repair is degenerate: {s[when]}",
                  file=sys.stderr)


def cmd_convert(args):
    import jax

    from jaxrepair import convert, models

    src = Path(args.model)
    if not src.exists():
        raise UsageError(f"{src} does not exist")
    try:
        if args.state_dict_spec:
            if not args.input_shape:
                raise UsageError("a state dict needs --input-shape (per example, PyTorch layout)")
            net = convert.from_state_dict(src, args.state_dict_spec, args.input_shape)
        else:
            kw = {"input_shape": args.input_shape} if args.input_shape else {}
            net = convert.load_any(src, **kw)
    except convert.ConversionError as e:
        raise UsageError(f"{e}") from None
    suffix = {"onnx": ".onnx", "nnet": ".nnet", "jaxrepair": ".npz"}[args.to]
    out = Path(args.out) if args.out else src.with_name(src.name.split(".")[0] + suffix)
    if not args.out and out.resolve() == src.resolve():
        out = src.with_name(src.name.split(".")[0] + ".converted" + suffix)  # never the input itself
    if out.resolve() == src.resolve():
        raise UsageError(f"--out {out} is the input model itself; jaxrepair never overwrites a user's file")
    if args.to == "onnx":
        convert.to_onnx(net, out)
    elif args.to == "nnet":
        convert.to_nnet(net, out)
    else:
        models.save(net, out)
    info = models.sites(net)
    n_params = sum(int(np.size(v)) for p in net.params().values() for v in p.values())
    rec = {"input": str(src), "output": str(out), "to": args.to, "nodes": len(net.graph.nodes),
           "input_shape": list(net.input_shape), "output_shape": list(info[net.graph.output].shape), "parameters": n_params}
    print(f"{src} -> {out}: {len(net.graph.nodes)} nodes, input {net.input_shape}, output {info[net.graph.output].shape}, "
          f"{n_params} parameters")
    if args.verify and src.suffix.lower() == ".onnx":
        import onnx
        from onnx.reference import ReferenceEvaluator

        m = onnx.load(str(src))
        x = np.asarray(jax.random.normal(jax.random.key(args.seed), (8, *net.input_shape)), np.float32)
        ref = ReferenceEvaluator(m).run(None, {net.meta["onnx"]["input"]: x})[0]
        err = float(np.max(np.abs(np.asarray(net(x)) - ref)))
        rec["verify_max_abs_error"] = err
        print(f"verify: max |jaxrepair - onnx reference| on 8 random inputs = {err:.3g}")
        if err > 1e-4 * max(1.0, float(np.max(np.abs(ref)))):
            raise RuntimeError("the converted model disagrees with the ONNX reference evaluator")
    return rec


def cmd_verify(args):
    from jaxrepair import properties, records, verify

    if bool(args.vnnlib) == bool(args.property):
        raise UsageError("verify needs exactly one of --vnnlib FILE or --property acasxu:phiN")
    if args.property:
        kind, _, phi = args.property.partition(":")
        if kind != "acasxu" or not phi.startswith("phi") or not phi[3:].isdigit() or not 1 <= int(phi[3:]) <= 10:
            raise UsageError(f"--property {args.property!r}: use acasxu:phi1 ... acasxu:phi10")
        prop, what = properties.Safety(int(phi[3:])), args.property
    else:
        prop, what = properties.from_vnnlib(args.vnnlib), str(args.vnnlib)
    model, _ = _load_model(args.model, args)
    out = records.new_run_dir(args.out, f"verify-{Path(args.model).stem}")
    v = verify.verify(model, prop, timeout=args.timeout, seed=args.seed, progress=True, branching=args.branching)
    rec = {"command": "verify", "model": args.model, "property": what, "timeout_s": args.timeout,
           "environment": records.environment(), **v.to_json()}
    records.write_json(out / "verify.json", rec)
    from jaxrepair.records import markdown_table

    table = markdown_table(["model", "property", "verdict", "seconds", "boxes" if v.branching == "input" else "domains"],
                           [(Path(args.model).name, what, v.verdict, round(v.seconds, 2), v.boxes)])
    records.write_text(out / "verify.md", f"# Verification\n\n{table}")
    print(table)
    if v.counterexample is not None:
        print(f"counterexample (flat input): {np.asarray(v.counterexample).tolist()}; output {np.asarray(v.output).tolist()}")
    print(f"wrote {out}/verify.json, verify.md")
    return rec


def cmd_sweep(args):
    from jaxrepair import sweep

    res = sweep.run(args.config, ray=args.ray is not None, ray_address=args.ray or None)
    print(_dumps(res))
    return res


def cmd_suite(args):
    from jaxrepair import suite

    if args.name == "acasxu":
        res = suite.acasxu(args.out, tasks=args.tasks, budget=args.timeout, note=args.note or "")
    elif args.report_only:
        store = Path(args.out) / f"suite_{args.name}.sqlite"
        if not store.is_file():
            raise FileNotFoundError(f"{store}: no suite store to report (run `jaxrepair suite {args.name}` first)")
        res = suite.report(store, args.out, note=args.note or "")
        res = {"files": res["files"], "targets": res["board"]["targets"]}
    else:
        options = {}
        for method, name, value in args.option or []:
            options.setdefault(method, {})[name] = value
        res = suite.run(args.name, args.out, methods=args.methods, seeds=args.seeds, entries=args.entries,
                        data_dir=args.data_dir, repair_samples=args.repair_samples, options=options or None,
                        ray=args.ray is not None, ray_address=args.ray or None,
                        note=args.note or "")
        res = {**{k: v for k, v in res.items() if k != "report"}, "files": res["report"]["files"],
               "targets": res["report"]["board"]["targets"]}
    print(Path(res["files"]["markdown"] if "markdown" in res["files"] else res["files"]["md"]).read_text())
    print(f"wrote {', '.join(res['files'].values())}")
    return res


def cmd_methods(args):
    from jaxrepair import repair
    from jaxrepair.records import markdown_table

    names = repair.methods_for(args.kind) if args.kind else list(repair.METHODS)
    rows = [repair.METHODS[n].to_json() for n in names]
    record = {"methods": rows}
    print(markdown_table(["method", "kinds", "level", "ranking", "random control", "what it does", "from"],
                         [(r["name"], ", ".join(r["kinds"]), r["level"], r["ranking"] or "–", r["control"] or "–",
                           r["summary"], r["paper"] or "jaxrepair") for r in rows]))
    return record


def cmd_report(args):
    from jaxrepair import sweep

    res = sweep.report(args.store, args.out)
    print(res["table"])
    print(f"wrote {', '.join(res['files'].values())}")
    return res


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
    preset = repair.preset_for(task.kind)
    loc = repair.localize(bench.model, task, progress=True)
    print(f"\nACE localisation (fairness effect, {args.repair_samples} repair-split samples x 16 values, every hidden neuron):")
    _print_ranking(loc, preset.k, preset.score)
    care = repair.repair(bench.model, task, preset="care", progress=True)
    ours = {"ACE + PSO (fairness preset)": repair.repair(bench.model, task, localization=loc, progress=True),
            "ACE-localised fine-tuning": repair.localized_finetune(bench.model, task, loc.ranking())}
    best, chosen = repair.choose(bench.model, task, list(ours.values()), max_drop=0.01)
    for c, name in zip(chosen, ours):
        c["label"] = name
    out = records.new_run_dir(args.out, "demo")
    files = {"care": repair.write_result(care, out / "care", extra={"command": "demo", "role": "care preset"})}
    if best is not None:
        files["best"] = repair.write_result(best, out / "best", extra={"command": "demo", "role": "best causal method",
                                                              "chosen_on_select": chosen})
    rows = {"care preset": care, **{f"best: {name}": r for name, r in ours.items() if r is best}}
    record = {"care": care.to_json(), "best": best.to_json() if best is not None else None, "chosen_on_select": chosen,
              "files": files}
    print("\nCandidates on the select split (the test split is not looked at to choose):")
    for c in chosen:
        print(f"  {c['label']:28s} violation {c['select_violation']:.4f}, accuracy {c['select_accuracy']:.4f}"
              f"{'' if c['within_budget'] else '  (over the 1-point budget)'}")
    print("\ncensus-sex, test split: CARE's own settings beside jaxrepair's best causal method within 1 point of accuracy\n")
    print(_side_by_side(rows))
    for name, r in rows.items():
        _print_summary(f"census-sex, {name}", r.summary(), sum(r.timings.values()))
        _print_locality(bench.model, r)
    if best is None:
        print("no causal method stayed within the 1-point accuracy budget on the select split", file=sys.stderr)
    print(f"total {time.perf_counter() - t0:.1f}s; wrote {out}")
    return record


def _side_by_side(rows: dict) -> str:
    cols = list(rows)
    sums = {c: r.summary() for c, r in rows.items()}
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for label, f in (("violation before", lambda s, r: f"{s['violation_before']:.4f}"),
                     ("violation after", lambda s, r: f"{s['violation_after']:.4f}"),
                     ("violation reduction", lambda s, r: "n/a" if s["violation_reduction"] is None
                      else f"{100 * s['violation_reduction']:.1f}%"),
                     ("accuracy before", lambda s, r: f"{s['accuracy_before']:.4f}"),
                     ("accuracy after", lambda s, r: f"{s['accuracy_after']:.4f}"),
                     ("accuracy drop (points)", lambda s, r: f"{s['accuracy_drop_points']:.2f}"),
                     ("neurons changed", lambda s, r: str(len(r.selected))),
                     ("time (s)", lambda s, r: f"{sum(r.timings.values()):.1f}")):
        lines.append(f"| {label} | " + " | ".join(f(sums[c], rows[c]) for c in cols) + " |")
    return "\n".join(lines)


def cmd_bench(args):
    from jaxrepair import records

    if args.what == "verify":
        from jaxrepair.bench import _verify

        if not args.vnncomp_dir:
            raise UsageError(f"bench verify needs --vnncomp-dir DIR (VNN-COMP 2021's {args.benchmark} folder)")
        results = _verify.run(args.vnncomp_dir, timeout=args.timeout, log=args.log, limit=args.limit,
                              falsifier_only=args.falsifier_only, benchmark=args.benchmark)
        print(f"{results['decided']}/{results['instances']} decided ({results['safe']} safe, {results['unsafe']} unsafe), "
              f"{results['wrong']} wrong, median {results['median_s']:.2f}s, total {results['total_s']:.0f}s")
    elif args.what == "onnx":
        from jaxrepair.bench import _onnx

        if not args.node_tests:
            raise UsageError("bench onnx needs --node-tests DIR (the folder with onnx_node.tar.xz)")
        results = _onnx.run(args.node_tests)
        if not args.json:
            from jaxrepair.records import markdown_table

            print(markdown_table(["op", "pass", "refused", "mismatch", "crash"],
                                 [(op, c.get("pass", 0), c.get("refused", 0), c.get("mismatch", 0), c.get("crash", 0))
                                  for op, c in results["per_op"].items()]))
    elif args.what == "cold":
        from jaxrepair.bench import _cold

        results = _cold.run(care_dir=args.care_dir, seed=0)
    elif args.what == "ace":
        from jaxrepair.bench import _ace

        results = _ace.run(samples=args.samples, models_=args.models)
    elif args.what == "scale":
        from jaxrepair.bench import _scale
        from jaxrepair.records import markdown_table

        results = _scale.scaling(args.scale_model, tuple(args.device_counts), samples=min(args.samples, 256))
        print(markdown_table(["devices", "platform", "evals/s", "evals/s per device", "speed-up", "efficiency"],
                             [(r["devices"], r["platform"], r["evals_per_s"], r["evals_per_s_per_device"], r["speedup"],
                               r["efficiency"]) for r in results["rows"]]))
    else:
        from jaxrepair.bench import _repair

        results = _repair.run(entries=args.entries)
    return {"benchmark": args.what, "environment": records.environment(), "results": results}


def cmd_zoo(args):
    from jaxrepair import zoo

    if args.action == "list":
        record = {"entries": [{"name": n, "kind": e.kind, **e.config(), "cached": (zoo.cache_dir() / f"{n}.npz").exists()}
                              for n, e in zoo.ENTRIES.items()]}
        for name, e in zoo.ENTRIES.items():
            cached = (zoo.cache_dir() / f"{name}.npz").exists()
            what = zoo.KINDS[e.kind].describe(e)
            print(f"{name:18s} {e.kind:9s} data={e.dataset:13s} {what:22s} {'(cached)' if cached else ''}")
        return record
    unknown = [n for n in args.names if n not in zoo.ENTRIES]
    if unknown:
        raise UsageError(f"unknown zoo entries {unknown}; known: {sorted(zoo.ENTRIES)}")
    names = args.names or sorted(zoo.ENTRIES)
    images = [n for n in names if zoo.needs_data_dir(n)]
    skipped = []
    if images:  # check the image files before any training
        from jaxrepair import data

        try:
            root = data.data_dir(args.data_dir, need=", ".join(images))
        except ValueError:
            if args.names:
                raise
            skipped, names = images, [n for n in names if n not in images]
            print(f"skipping {', '.join(images)}: no --data-dir or $JAXREPAIR_DATA with the image files",
                  file=sys.stderr)
        else:
            for n in images:
                data.check_files(zoo.entry(n).dataset, root)
    built = []
    for name in names:
        b = zoo.build(name, progress=True, data_dir=args.data_dir)
        m = {k: v for k, v in b.metrics.items() if k != "counterexamples"}
        built.append({"name": name, **m, "build_time_s": round(b.model.meta["zoo"]["build_time_s"], 2)})
        print(_dumps(built[-1]))
    return {"built": built, "skipped": skipped}


def cmd_evaluate(args):
    from jaxrepair import zoo

    model, bench = _load_model(args.model, args)
    ds = _user_table(args)
    if ds is not None:
        from jaxrepair import repair

        res = {"data": str(args.data), **repair.evaluate_table(model, ds, sensitive=args.sensitive, rows=args.rows,
                                                              seed=args.seed, where=args.data)}
        _print_evaluation(res)
        return res
    if bench is None:
        if not args.entry:
            raise UsageError("a model file needs --entry ZOO_NAME to know its data and property")
        bench = zoo.load(args.entry, data_dir=getattr(args, "data_dir", None))
    if args.property != "default" and args.property != bench.entry.kind:
        raise UsageError(f"{bench.name} is a {bench.entry.kind} benchmark; --property {args.property} does not apply")
    res = {"measured_on": f"{bench.name}'s test split", **zoo.evaluate(bench, model, seed=args.seed)}
    _print_evaluation(res)
    return res


def _print_evaluation(res: dict) -> None:
    """The metrics as a two-column table (``--json`` prints the whole record, groups included)."""
    from jaxrepair.records import markdown_table

    def show(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, dict) and "rate" in v and "ci95" in v:
            return f"{v['rate']:.4f} (95% interval {v['ci95'][0]:.4f} to {v['ci95'][1]:.4f}, {v['num_rows']} rows)"
        return str(v)

    rows = [(k, show(v)) for k, v in res.items() if k != "groups" and (not isinstance(v, (dict, list)) or "rate" in v)]
    rows += [(f"sensitive {k}", v) for k, v in res.get("sensitive", {}).items()]
    for value, g in res.get("groups", {}).get("by_group", {}).items():
        rows.append((f"group {value}", ", ".join(f"{k} {int(x) if k == 'count' else show(float(x))}" for k, x in g.items())))
    print(markdown_table(["metric", "value"], rows))
    print("(--json prints the record as JSON)")


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped command, choice or option (exit code 2, as argparse)."""

    def error(self, message):
        import difflib

        from jaxrepair.records import did_you_mean

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            message += did_you_mean(m.group(1), re.findall(r"'?([\w.:-]+)'?", m.group(2)))
        m = re.match(r"unrecognized arguments: (.*)", message)
        if m:
            known = [o for a in self._actions for o in a.option_strings]
            owners: dict = {}  # option -> the commands that take it
            for sub in self._subparsers._group_actions if self._subparsers else []:
                for cmd, p in sub.choices.items():
                    for o in (o for a in p._actions for o in a.option_strings):
                        owners.setdefault(o, []).append(cmd)
            known += list(owners)
            hints, elsewhere = [], []
            for word in m.group(1).split():
                flag = word.split("=", 1)[0]
                close = difflib.get_close_matches(flag, known, n=1, cutoff=0.7) if flag.startswith("--") else []
                if close and close[0] == flag:  # a real option, of other commands
                    elsewhere.append(f"{flag} is an option of {', '.join(sorted(set(owners[flag])))}")
                elif close:
                    hints.append(f"{flag} -> {close[0]}")
            if hints:
                message += f" (did you mean: {', '.join(hints)}?)"
            if elsewhere:
                message += f" ({'; '.join(elsewhere)}, not of this command)"
        super().error(message)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with every option's default shown (options without a help text too), descriptions kept
    as written."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default not in (None, argparse.SUPPRESS):
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action):
        if action.default is None:  # "(default: None)" says nothing; the help text says what happens
            return action.help
        return super()._get_help_string(action)


#: Commands whose --out is a directory of run folders: checked before any work starts.
RUN_DIR_COMMANDS = ("localize", "features", "cf-fairness", "feature-repair", "irm", "tde", "repair", "demo", "verify")
#: Commands that may run across processes: only these start JAX's distributed runtime.
DISTRIBUTED_COMMANDS = ("localize", "repair", "sweep", "bench")


_SWEEP_HELP = """Runs a grid of repairs into an SQLite store that survives kills and is shared safely.

The config (TOML, or YAML with PyYAML installed) has up to three parts, all checked before any work:

  store = "sweep.sqlite"     # optional; default <config stem>.sqlite next to the config
  [grid]                     # lists; their cartesian product is the set of cells
  entry = ["census-sex", "german-sex"]       # zoo entries (required)
  property = ["default"]                     # default | fairness | backdoor | safety
  strategy = ["pso", "cma_es"]               # care | pso | cma_es | de | snes | open_es
  k = [5, 10]                                # neurons repaired (absent: the preset's)
  a = [0.2, 0.5]                             # objective weight in [0, 1] (absent: the preset's)
  seed = [0, 1]
  [settings]                 # shared by every cell
  generations = 30           # population = 20, repair_samples = 5000, space = "factor" | "delta",
  max_drop = 0.0075          # bounds = [LOW, HIGH] (factor) or B (delta), score, devices = 0 (all)

The cells of one (entry, property, strategy) run as one compiled program; each group's records are
stored in one transaction; a restarted sweep skips stored cells, and two sweeps on one store split
the cells between them (cells are claimed). `jaxrepair report STORE` makes the table and plots."""


def _data_options(p) -> None:
    p.add_argument("--data", help="your own data instead of a zoo entry's: a .csv table (header row) or an .npz with "
                   "x and a label array; rows split 60/20/20 into repair/select/test")
    p.add_argument("--label", default="y", help="the label column (.csv) or array (.npz) of --data")
    p.add_argument("--sensitive", help="COL[:V1,V2,...]: the sensitive column of --data (name or index) and its values "
                   "(default: the values in the data)")
    _table_options(p)
    _data_dir_option(p)


def _table_options(p) -> None:
    """How a --data table is read and split (jr.data.load_user_table's options)."""
    p.add_argument("--missing", default="error", choices=["error", "drop"],
                   help="a .csv cell that is blank, NA, NaN, null, None or ?: refuse the file (error), or drop its row")
    p.add_argument("--categorical", type=_names,
                   help="COL,COL,...: .csv columns to read as category codes although they hold numbers (a column "
                        "that mixes numbers and text is refused otherwise)")
    p.add_argument("--split-seed", type=SEED, default=0, help="seed of the table's 60/20/20 repair/select/test split")
    p.add_argument("--save-split", metavar="FILE", help="write the split's row indices (0-based data rows) to this new "
                   "JSON file")


def _data_dir_option(p) -> None:
    p.add_argument("--data-dir", help="where the image benchmarks' files are (mnist/, fashion-mnist/, gtsrb/; "
                   "default $JAXREPAIR_DATA); only the image zoo entries read it")


def _preset_default(field: str) -> str:
    """``default: the preset's (fairness X, backdoor Y, ...)`` for a preset field, read from jr.repair.PRESETS."""
    from jaxrepair import repair

    def show(v):
        if v is None:
            return "none"
        if isinstance(v, tuple):
            return " ".join(f"{x:g}" for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    return "default: the preset's (" + ", ".join(f"{n} {show(getattr(pr, field))}" for n, pr in repair.PRESETS.items()) + ")"


def _strategy_default(field: str) -> str:
    """``default: the strategy's (pso 100, ...)`` from jr.repair.STRATEGIES."""
    from jaxrepair import repair

    vals: dict = {}
    for n, st in repair.STRATEGIES.items():
        vals.setdefault(getattr(st, field), []).append(n)
    return "default: the strategy's (" + "; ".join(f"{'/'.join(ns)} {v}" for v, ns in vals.items()) + ")"


def _parser_demo(sub) -> None:
    d = sub.add_parser("demo", help="the end-to-end demo: build census-sex, localise, repair, before/after")
    d.add_argument("--out", default="jaxrepair-out")
    d.add_argument("--repair-samples", type=POS, default=5000)
    d.set_defaults(fn=cmd_demo)


def _parser_repair(sub) -> None:
    rp = sub.add_parser("repair", help="localise with ACE and repair with an evosax strategy (or a baseline)")
    rp.add_argument("model", help="zoo entry name or model file: .npz, .onnx, .keras/.h5, .nnet (with --entry for its data and property)")
    rp.add_argument("--entry", help="zoo entry whose data and property to use (for model files)")
    _data_options(rp)
    rp.add_argument("--property", default="default", choices=["default", "fairness", "backdoor", "safety"],
                    help="the property to repair; default: the zoo entry's (fairness with --data and --sensitive)")
    rp.add_argument("--preset", help="fairness | backdoor | safety | custom | care (default: the task's kind); "
                    "every option below overrides its value")
    rp.add_argument("--strategy", help="care (pyswarms PSO as CARE) | pso (evosax) | cma_es | de | snes | open_es | "
                                       "nsga2 | nsga3 (multi-objective, pymoo's operators); " + _preset_default("strategy"))
    rp.add_argument("--objectives", type=_names,
                    help="what nsga2/nsga3 minimise, comma-separated: violation, accuracy_loss, drawdown (safety), "
                         "changed (default violation,accuracy_loss)")
    rp.add_argument("--space", choices=["factor", "delta"], help="search scaling factors of the neurons' outputs, or "
                    "deltas added to their incoming weights; " + _preset_default("space"))
    rp.add_argument("--k", type=POS, help="neurons to repair; " + _preset_default("k"))
    rp.add_argument("--a", type=_float_in(0.0, 1.0), help="weight of 1-accuracy in (1-a)*violation + a*(1-accuracy); "
                    + _preset_default("a"))
    rp.add_argument("--bounds", type=float, nargs="+", help="factor LOW HIGH, or delta bound (x layer std); "
                    + _preset_default("bounds"))
    rp.add_argument("--max-drop", type=_max_drop, help="accuracy budget as a fraction (0.01 = 1 point) or 'none': "
                    "penalised in the search, enforced when the result is chosen on the select split; "
                    + _preset_default("max_drop"))
    rp.add_argument("--generations", type=_int_in(1, 100_000), help="generations of the search (it stops earlier "
                    "once the select fitness stalls); " + _strategy_default("generations"))
    rp.add_argument("--population", type=_int_in(4, 100_000), help="candidates per generation; "
                    + _strategy_default("population_size"))
    rp.add_argument("--score", choices=["interventional_change", "care_mean", "care_spread"],
                    help="how ACE ranks the neurons; " + _preset_default("score"))
    rp.add_argument("--baseline", choices=["random", "prune", "finetune-all", "finetune-masked"],
                    help="run a baseline instead of ACE selection + search (the registry's random-pso, prune, "
                    "finetune-all, ace-finetune with one k)")
    rp.add_argument("--method", help="run a registered method (jr.repair.METHODS; `jaxrepair methods` lists them) "
                    "instead of the preset's search; --k, --a, --generations, --population, --max-drop pass on where "
                    "it takes them")
    rp.add_argument("--choose", type=_names, metavar="METHOD,METHOD",
                    help="run these registered methods and keep the one chosen on the select split (lowest violation "
                    "within --max-drop, default 1 point; what the demo does, e.g. ace-pso,ace-finetune)")
    rp.add_argument("--devices", type=POS, help="devices to shard localisation and the population over (default: all)")
    rp.add_argument("--localizer", choices=["ace", "interchange"],
                    help="rank neurons by ACE or by interchange interventions on counterfactual pairs")
    rp.add_argument("--pareto", type=_a_values, help="comma-separated a values in [0, 1]: one vmapped run, non-dominated front")
    rp.add_argument("--certify", action="store_true", help="repair and verify in rounds until the property is proven "
                    "(a safety task or a VNN-LIB property); the record says whether it was")
    rp.add_argument("--verify-timeout", type=_float_in(0.0, open_low=True), default=60.0,
                    help="--certify: seconds of verification per round")
    rp.add_argument("--certify-bound-steps", type=_int_in(0, 100_000), default=150,
                    help="--certify: steps of training on the CROWN bounds of the boxes a round leaves open (0: none)")
    rp.add_argument("--after", metavar="SITE", help="repair only the layers after SITE (e.g. flatten): every batch is "
                    "mapped through the layers before it once (jr.repair.lower); the whole repaired network is written")
    rp.add_argument("--pareto-seeds", type=_int_in(1, 1000), default=1, help="--pareto: seeds 0..N-1, one front each "
                    "(hypervolume with an interval over them)")
    rp.add_argument("--repair-samples", type=POS, default=5000, help="train rows the search sees (a zoo entry's; the "
                    "whole repair split of --data)")
    rp.add_argument("--seed", type=SEED, default=0, help="seed of the search (and of the repair rows' sample)")
    rp.add_argument("--out", default="jaxrepair-out")
    rp.set_defaults(fn=cmd_repair)


def _parser_convert(sub) -> None:
    cv = sub.add_parser("convert", help="convert ONNX/Keras/.nnet/state-dict models to jaxrepair (.npz), ONNX or .nnet")
    cv.add_argument("model", help=".onnx, .keras, .h5, .nnet[.xz], .npz, or a state dict (.pt/.pth/.safetensors/.npz) with --spec")
    cv.add_argument("--to", default="jaxrepair", choices=["jaxrepair", "onnx", "nnet"])
    cv.add_argument("--out", help="output file (default: next to the input; never overwritten)")
    cv.add_argument("--spec", dest="state_dict_spec", nargs="+", help="sequential spec for a state dict, e.g. Linear ReLU Linear")
    cv.add_argument("--input-shape", type=POS, nargs="+", help="per-example input shape (dynamic ONNX inputs, state dicts)")
    cv.add_argument("--verify", action="store_true", help="compare with onnx's reference evaluator on random inputs")
    cv.add_argument("--seed", type=SEED, default=0)
    cv.set_defaults(fn=cmd_convert)


def _parser_localize(sub) -> None:
    lz = sub.add_parser("localize", help="ACE fault localisation")
    lz.add_argument("model", help="zoo entry name or model .npz")
    lz.add_argument("--data", help=".npz with x (and y, x_cf) arrays, or a .csv table with --label; default: the zoo "
                    "entry's split")
    lz.add_argument("--label", default="y", help="with a .csv --data: the label column (dropped from the features)")
    _table_options(lz)
    lz.add_argument("--sensitive", help="COL[:V1,V2,...]: the fairness effect on this column of your data")
    lz.add_argument("--split", default="val", choices=["train", "val", "test"])
    lz.add_argument("--devices", type=POS, help="devices to shard the (unit, value) grid over (default: all)")
    lz.add_argument("--data-parallel", type=POS, default=1, help="devices along the mesh axis that splits the data")
    lz.add_argument("--method", default="ace", choices=["ace", "interchange"],
                    help="ace: interventions over a value grid; interchange: patch activations from counterfactual pairs")
    lz.add_argument("--effect", default="fairness", help="fairness[:COL:V1,V2[:TARGET]] | target:C[:prob] | pair[:C]")
    lz.add_argument("--sites", nargs="*", help="site names (default: hidden post-activation sites)")
    lz.add_argument("--samples", type=POS, default=1000)
    lz.add_argument("--num-values", type=_int_in(2, 1024), default=16)
    lz.add_argument("--score", default="interventional_change", choices=["interventional_change", "care_mean", "care_spread"])
    lz.add_argument("--top", type=POS, default=10)
    lz.add_argument("--seed", type=SEED, default=0)
    lz.add_argument("--out", default="jaxrepair-out")
    lz.set_defaults(fn=cmd_localize)


def _parser_features(sub) -> None:
    fe = sub.add_parser("features", help="input-feature ACE (Chattopadhyay et al.): exact or second-order")
    fe.add_argument("model", help="zoo entry name or model file (.npz, .onnx, ...) with a flat input")
    fe.add_argument("--data", help=".npz with an 'x' array, or a .csv table with --label; default: the zoo entry's split")
    fe.add_argument("--label", default="y", help="with a .csv --data: the label column (dropped from the features)")
    _table_options(fe)
    fe.add_argument("--split", default="val", choices=["train", "val", "test"])
    fe.add_argument("--method", default="exact", choices=["exact", "taylor"])
    fe.add_argument("--output", type=_int_in(0), default=1, help="which output's ACE to rank by")
    fe.add_argument("--num-values", type=_int_in(2, 1024), default=16)
    fe.add_argument("--samples", type=POS, default=2000)
    fe.add_argument("--top", type=POS, default=15)
    fe.add_argument("--seed", type=SEED, default=0)
    fe.add_argument("--out", default="jaxrepair-out")
    fe.set_defaults(fn=cmd_features)


def _parser_cf_fairness(sub) -> None:
    cf = sub.add_parser("cf-fairness", help="counterfactual fairness under the dataset's default SCM, next to the flip metric")
    cf.add_argument("model", help="a fairness zoo entry, or a model file with --data, --label and --sensitive")
    _data_options(cf)
    cf.add_argument("--equations", default="linear", choices=["linear", "mlp"])
    cf.add_argument("--seed", type=SEED, default=0)
    cf.add_argument("--out", default="jaxrepair-out")
    cf.set_defaults(fn=cmd_cf_fairness)


def _parser_feature_repair(sub) -> None:
    fr = sub.add_parser("feature-repair", help="counterfactual logit pairing / augmentation fine-tuning of a fairness zoo entry")
    fr.add_argument("model", help="a fairness zoo entry, or a model file with --data, --label and --sensitive")
    _data_options(fr)
    fr.add_argument("--method", default="clp", choices=["clp", "augment"])
    fr.add_argument("--flip", action="store_true", help="plain attribute flips instead of SCM counterfactuals")
    fr.add_argument("--equations", default="linear", choices=["linear", "mlp"])
    fr.add_argument("--lam", type=_float_in(0.0), default=1.0)
    fr.add_argument("--steps", type=_int_in(10, 1_000_000), default=300)
    fr.add_argument("--max-drop", type=_max_drop, default=0.0075)
    fr.add_argument("--repair-samples", type=POS, default=5000)
    fr.add_argument("--seed", type=SEED, default=0)
    fr.add_argument("--out", default="jaxrepair-out")
    fr.set_defaults(fn=cmd_feature_repair)


def _parser_irm(sub) -> None:
    ir = sub.add_parser("irm", help="ERM vs IRMv1 on coloured digits (colour reversed at test time)")
    ir.add_argument("--seeds", type=_int_in(1, 100), default=3)
    ir.add_argument("--penalty", type=_float_in(0.0), default=1e4)
    ir.add_argument("--steps", type=POS, default=500)
    ir.add_argument("--out", default="jaxrepair-out")
    ir.set_defaults(fn=cmd_irm)


def _parser_tde(sub) -> None:
    td = sub.add_parser("tde", help="plain vs de-confounded training + TDE on long-tailed digits")
    td.add_argument("--seeds", type=_int_in(1, 100), default=3)
    td.add_argument("--ratio", type=_float_in(1.0), default=50.0)
    td.add_argument("--out", default="jaxrepair-out")
    td.set_defaults(fn=cmd_tde)


def _parser_verify(sub) -> None:
    vf = sub.add_parser("verify", help="prove a property safe (certificate) or find a counterexample: bounds + branch "
                        "and bound + falsifier")
    vf.add_argument("model", help="a model file (.onnx, .nnet, .npz) or a zoo entry")
    vf.add_argument("--vnnlib", help="a VNN-LIB property file")
    vf.add_argument("--property", help="a built-in property: acasxu:phi1 ... acasxu:phi10")
    vf.add_argument("--timeout", type=_float_in(0.0, open_low=True), default=60.0, help="seconds")
    vf.add_argument("--exit-code", action="store_true", help="exit with the verdict: " + ", ".join(
        f"{c} {v}" for v, c in VERDICT_EXIT.items()) + " (without it: 0 whatever the verdict, 2 bad input)")
    vf.add_argument("--seed", type=SEED, default=0)
    vf.add_argument("--branching", default="auto", choices=["auto", "input", "relu"],
                    help="what branch and bound splits: input boxes, or hidden ReLUs by sign (beta-CROWN; ReLU chains); "
                    "auto: ReLUs on chains with more than 32 inputs")
    vf.add_argument("--out", default="jaxrepair-out")
    vf.set_defaults(fn=cmd_verify)


def _parser_sweep(sub) -> None:
    sw = sub.add_parser("sweep", help="run a grid of repairs from a TOML/YAML file into a resumable SQLite store",
                        description=_SWEEP_HELP)
    sw.add_argument("config", help="the sweep's TOML or YAML file (see above)")
    sw.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                    help="run each (entry, property, strategy) group as a Ray task: on the cluster at ADDRESS "
                    "(host:port, or 'auto'), or without one on a local Ray instance using this machine's cores; "
                    "needs pip install 'jaxrepair[ray]'")
    sw.set_defaults(fn=cmd_sweep)


def _parser_suite(sub) -> None:
    su = sub.add_parser("suite", help="a benchmark family end to end, resumable: fairness, backdoor, spurious, safety "
                        "(entries x registered methods x seeds, with intervals, paired tests and causal vs random), or "
                        "acasxu (VeRe's 36 ACAS Xu tasks, certified repair)")
    su.add_argument("name", choices=["fairness", "backdoor", "spurious", "safety", "acasxu"])
    su.add_argument("--out", default="suite-out", help="directory of the store, JSON, markdown table and plot")
    su.add_argument("--methods", nargs="+", help="registry method names (default: every method for the family's kind; "
                    "`jaxrepair methods` lists them)")
    su.add_argument("--seeds", type=POS, default=5, help="seeds 0..N-1 per entry and method (default 5)")
    su.add_argument("--entries", nargs="+", help="only these entries of the family")
    su.add_argument("--data-dir", help="image sets (backdoor, spurious): the directory with MNIST / Fashion / GTSRB")
    su.add_argument("--repair-samples", type=POS, help="train rows the repair sees (default: the family's, 5000; "
                    "backdoor 1000)")
    su.add_argument("--option", action="append", type=_method_option, metavar="METHOD:NAME=VALUE",
                    help="a method's option for this run, e.g. ace-finetune:preserve=1.0 (repeatable; part of each "
                    "cell's identity; `jaxrepair methods` lists the options)")
    su.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                    help="run each (entry, seed) as a Ray task (its methods share the localisation): on the cluster "
                    "at ADDRESS, or without one on a local Ray instance; only this process writes the store")
    su.add_argument("--report-only", action="store_true", help="rewrite the leaderboard from the store; run nothing")
    su.add_argument("--note", help="a paragraph for the report: how the run was made (machine load, ...)")
    su.add_argument("--tasks", nargs="+", help="acasxu: only these tasks, e.g. N2,1-phi2 N1,9-phi7 (default: all 36)")
    su.add_argument("--timeout", type=_float_in(0.0, open_low=True), default=120.0, help="acasxu: seconds per task")
    su.set_defaults(fn=cmd_suite)


def _parser_methods(sub) -> None:
    me = sub.add_parser("methods", help="the registered repair methods (jr.repair.METHODS): kinds, ranking, control")
    me.add_argument("--kind", choices=["fairness", "backdoor", "safety", "spurious", "custom"],
                    help="only the methods for this task kind")
    me.set_defaults(fn=cmd_methods)


def _parser_report(sub) -> None:
    rep = sub.add_parser("report", help="markdown table and plots of a sweep store")
    rep.add_argument("store", help="a sweep store (.sqlite) written by `jaxrepair sweep`")
    rep.add_argument("--out", help="output directory (default: next to the store)")
    rep.set_defaults(fn=cmd_report)


def _parser_bench(sub) -> None:
    bn = sub.add_parser("bench", help="benchmarks: ace (localisation), repair (population fitness), scale (devices), "
                        "cold (CARE's census task end to end from a cold process), onnx (onnx's node tests through the "
                        "importer), verify (VNN-COMP instances)")
    bn.add_argument("what", choices=["ace", "repair", "scale", "cold", "onnx", "verify"])
    bn.add_argument("--vnncomp-dir", help="verify: VNN-COMP 2021's benchmark folder, or the folder holding it (nets, "
                    "vnnlib, instances, published results)")
    bn.add_argument("--benchmark", default="acasxu", choices=["acasxu", "mnistfc", "cifar10_resnet"],
                    help="verify: which VNN-COMP 2021 benchmark (default acasxu)")
    bn.add_argument("--timeout", type=_float_in(0.0, open_low=True), help="verify: seconds per instance "
                    "(default: the competition's)")
    bn.add_argument("--log", help="verify: append one JSON line per instance to this file as it finishes")
    bn.add_argument("--limit", type=POS, help="verify: only the first N instances")
    bn.add_argument("--falsifier-only", action="store_true", help="verify: only the falsifier (counts the "
                    "counterexamples it finds alone)")
    bn.add_argument("--node-tests", help="onnx: folder with onnx's backend node tests (onnx_node.tar.xz)")
    bn.add_argument("--care-dir", help="cold: directory with CARE's census files (census_sex_ref.npz); "
                    "default: the zoo's census-sex model")
    bn.add_argument("--scale-model", default="mlp-784-4096-4096-10", choices=["mlp-784-4096-4096-10", "mlp-784-1024-1024-10"])
    bn.add_argument("--device-counts", type=_int_in(1, 64), nargs="+", default=[1, 2, 4, 8])
    bn.add_argument("--samples", type=POS, default=1000, help="ace: samples per neuron and value")
    bn.add_argument("--entries", nargs="*", choices=["census-sex", "digits-badnets"], help="repair: zoo entries")
    bn.add_argument("--models", nargs="*", choices=["census-mlp", "wide-mlp"])
    bn.set_defaults(fn=cmd_bench)


def _parser_zoo(sub) -> None:
    z = sub.add_parser("zoo", help="list or build zoo entries")
    z.add_argument("action", choices=["list", "build"])
    z.add_argument("names", nargs="*", help="build: the entries to build (default: all)")
    _data_dir_option(z)
    z.set_defaults(fn=cmd_zoo)


def _parser_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="metrics of a model on its property")
    ev.add_argument("model", help="zoo entry name or model file: .npz, .onnx, .keras/.h5, .nnet (with --entry, or --data)")
    ev.add_argument("--entry", help="zoo entry whose data/property to use (for model files)")
    _data_options(ev)
    ev.add_argument("--property", default="default", choices=["default", "fairness", "backdoor", "safety"],
                    help="the property to measure; default: the zoo entry's (fairness with --sensitive)")
    ev.add_argument("--rows", default="test", choices=["test", "all"],
                    help="--data rows to score: the test split a repair reports on, or every row")
    ev.add_argument("--seed", type=SEED, default=0, help="seed of the violation's bootstrap interval")
    ev.set_defaults(fn=cmd_evaluate)


COMMAND_PARSERS = (_parser_demo, _parser_repair, _parser_convert, _parser_localize, _parser_features, _parser_cf_fairness, _parser_feature_repair, _parser_irm, _parser_tde, _parser_verify, _parser_sweep, _parser_suite, _parser_methods, _parser_report, _parser_bench, _parser_zoo, _parser_evaluate)


def build_parser() -> argparse.ArgumentParser:
    from jaxrepair import __version__

    p = _Parser(prog="jaxrepair", description="Causality-driven neural-network repair in JAX",
                                formatter_class=_Formatter,
                                epilog="exit codes: 0 ok, 1 the work failed, 2 bad input (nothing was run), 130 interrupted; "
                       "`verify --exit-code`: 0 safe, 10 unsafe, 20 unknown")
    p.add_argument("--version", action="version", version=f"jaxrepair {__version__}")
    p.add_argument("--coordinator", help="multi-process runs: coordinator HOST:PORT (or JAXREPAIR_COORDINATOR)")
    p.add_argument("--num-processes", type=POS, help="multi-process runs: process count (or JAXREPAIR_NUM_PROCESSES)")
    p.add_argument("--process-id", type=_int_in(0), help="multi-process runs: this process's id (or JAXREPAIR_PROCESS_ID)")
    p.add_argument("--init-timeout", type=POS, default=60,
                   help="multi-process runs: seconds to wait for the other processes before giving up")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    _add = sub.add_parser

    def add_parser(*a, **kw):  # defaults shown everywhere, --json on every command
        sp = _add(*a, formatter_class=_Formatter, **kw)
        sp.add_argument("--json", action="store_true", help="print the result record as JSON on stdout (and "
                        "nothing else there; progress goes to stderr)")
        return sp

    sub.add_parser = add_parser

    for add in COMMAND_PARSERS:
        add(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)  # argparse reports bad options itself, with exit code 2
    stdout, style = sys.stdout, os.environ.get("JAXREPAIR_PROGRESS")
    if args.json:
        sys.stdout = sys.stderr  # human-readable output goes to stderr; stdout gets the JSON record only
        os.environ["JAXREPAIR_PROGRESS"] = style or "plain"  # progress as plain lines, not a redrawn bar
    try:
        from jaxrepair import compile_cache

        compile_cache.enable()  # the command's programs are read back by the next run (JAXREPAIR_NO_COMPILE_CACHE=1: off)
        if args.cmd in RUN_DIR_COMMANDS:
            from jaxrepair import records

            records.check_output_dir(args.out)
        if args.cmd in DISTRIBUTED_COMMANDS:
            from jaxrepair import distributed

            distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout)
        record = args.fn(args)  # the command's result record: the JSON that --json prints
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every failure becomes a message and an exit code
        if os.environ.get("JAXREPAIR_DEBUG"):
            raise
        from jaxrepair.convert import ConversionError

        bad_input = isinstance(e, (ValueError, IndexError, FileNotFoundError, FileExistsError, NotADirectoryError,
                                   IsADirectoryError, PermissionError, ImportError, ConversionError))
        msg = str(e) if bad_input or isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}"
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT if bad_input else EXIT_FAILED
    finally:
        sys.stdout = stdout
        if style is None:
            os.environ.pop("JAXREPAIR_PROGRESS", None)
    if args.json:
        print(_dumps(record if record is not None else {}))
    if getattr(args, "exit_code", False):
        return VERDICT_EXIT[record["verdict"]]
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
