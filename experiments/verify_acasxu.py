"""VNN-COMP 2021 ACAS Xu with ``jr.verify``: the table of every instance measured, beside the published results.

Reads the JSON lines that ``jaxrepair bench verify --log FILE`` appends (one per finished
instance; the benchmark can be stopped and its log still read) and writes
``experiments/results/verify_acasxu.md`` with the machine, date, counts, wrong answers against the
published majority, median and total time, and one row per instance::

    jaxrepair bench verify --vnncomp-dir ../shared/data/vnncomp-acasxu --timeout 60 --log verify.jsonl
    python experiments/verify_acasxu.py verify.jsonl [--falsifier falsifier.jsonl]

``--rerun DIR`` re-runs, with the current code, the instances the committed table left unknown plus
the ``--spot`` slowest decided ones (a regression check), and appends a section with them to the
table (the full bench takes long; the other instances keep their measured rows)::

    python experiments/verify_acasxu.py --rerun ../shared/data/vnncomp-acasxu
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

import jaxrepair as jr
from jaxrepair.suite import machine


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", nargs="?", help="JSON lines from `jaxrepair bench verify --log`")
    p.add_argument("--rerun", metavar="VNNCOMP_DIR", help="re-run the unknown instances of the committed table (see above)")
    p.add_argument("--spot", type=int, default=10, help="with --rerun: this many of the slowest decided instances too")
    p.add_argument("--falsifier", help="JSON lines from the same bench with --falsifier-only")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--note", default="", help="a line on how the log was made (the commit, what ran beside it)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    if a.rerun:
        return rerun(a)
    if not a.log:
        p.error("give the bench's log (or --rerun VNNCOMP_DIR)")
    rows = _rows(a.log)
    env = jr.records.environment()
    secs = np.array([r["seconds"] for r in rows])
    decided = [r for r in rows if r["verdict"] != "unknown"]
    wrong = [r for r in rows if r["wrong"]]
    pub = {"safe": sum(r["published"] == "safe" for r in rows), "unsafe": sum(r["published"] == "unsafe" for r in rows)}
    lines = [f"# VNN-COMP 2021 ACAS Xu with jr.verify\n",
             f"Measured {env['date']} on {machine()} ({env['machine']}, no GPU; what ran beside it: the note), jax "
             f"{env['versions']['jax']}; {a.timeout:g} s per instance. Regenerate: `jaxrepair bench verify --vnncomp-dir "
             f"DIR --timeout {a.timeout:g} --log verify.jsonl` then `python experiments/verify_acasxu.py verify.jsonl`.\n",
             *([f"{a.note}\n"] if a.note else []),
             f"**{len(rows)} of 186 instances measured** (published: {pub['safe']} safe, {pub['unsafe']} unsafe among them). "
             f"Decided {len(decided)} ({sum(r['verdict'] == 'safe' for r in rows)} safe, "
             f"{sum(r['verdict'] == 'unsafe' for r in rows)} unsafe), unknown {len(rows) - len(decided)}, "
             f"**wrong {len(wrong)}**; median {np.median(secs):.2f} s, total {secs.sum():.0f} s.\n",
             "Target (issue 15): all 186, >= 180 decided, 0 wrong, median <= 5 s on the 2-core CPU. Anchors: "
             "alpha,beta-CROWN and nnenum decide all 186 (alpha,beta-CROWN 6-18 s per instance on a GPU).\n"]
    if a.falsifier:
        f = _rows(a.falsifier)
        sat = [r for r in f if r["published"] == "unsafe"]
        found = [r for r in sat if r["verdict"] == "unsafe"]
        false_alarm = [r for r in f if r["published"] == "safe" and r["verdict"] == "unsafe"]
        lines.append(f"Falsifier alone: a confirmed counterexample on **{len(found)} of {len(sat)}** violated instances "
                     f"measured, {len(false_alarm)} on safe ones (target: >= 44 of 47, none on the 139).\n")
    lines.append(jr.records.markdown_table(["network", "property", "verdict", "published", "seconds", "boxes"],
                                           [(r["onnx"].replace("ACASXU_run2a_", "").replace("_batch_2000.onnx", ""),
                                             r["vnnlib"].replace(".vnnlib", ""), r["verdict"] + (" WRONG" if r["wrong"] else ""),
                                             r["published"], round(r["seconds"], 2), r["boxes"]) for r in rows]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "verify_acasxu.md"
    for f in (target, out / "verify_acasxu.json"):  # the previous table is kept beside, never overwritten in place
        if f.exists():
            f.replace(f.with_name(f.name + ".previous"))
    jr.records.write_text(target, "\n".join(lines))
    jr.records.write_json(out / "verify_acasxu.json", {"environment": env, "rows": rows,
                                                         "falsifier_rows": _rows(a.falsifier) if a.falsifier else None})
    print("\n".join(lines[:5]))
    return 0


def _short(r):
    return r["onnx"].replace("ACASXU_run2a_", "").replace("_batch_2000.onnx", ""), r["vnnlib"].replace(".vnnlib", "")


def rerun(a) -> int:
    """The unknown instances of the committed table and the ``a.spot`` slowest decided ones, re-run now."""
    from jaxrepair.bench import _verify  # the bench's runner (what `jaxrepair bench verify` calls)

    out = Path(a.out)
    old = json.loads((out / "verify_acasxu.json").read_text())
    before = {(r["onnx"], r["vnnlib"]): r for r in old["rows"]}
    unknown = [k for k, r in before.items() if r["verdict"] == "unknown"]
    decided = sorted((k for k, r in before.items() if r["verdict"] != "unknown"), key=lambda k: -before[k]["seconds"])
    spot = decided[: a.spot]
    log = out / "verify_acasxu_rerun.jsonl"
    if log.exists():
        log.replace(log.with_name(log.name + ".previous"))
    env = jr.records.environment()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    res = _verify.run(a.rerun, timeout=a.timeout, log=str(log), only=unknown + spot)
    rows = res["rows"]
    now = {(r["onnx"], r["vnnlib"]): r for r in rows}
    newly = [k for k in unknown if now[k]["verdict"] != "unknown"]
    changed = [k for k in spot if now[k]["verdict"] != before[k]["verdict"]]
    wrong = [r for r in rows if r["wrong"]]
    merged = {**before, **now}
    n_dec = sum(r["verdict"] != "unknown" for r in merged.values())
    secs = np.array([r["seconds"] for r in rows])
    spot_ratio = np.array([now[k]["seconds"] / max(before[k]["seconds"], 1e-9) for k in spot])
    V = jr.verify
    lines = [f"\n## Re-run of the unknown instances ({env['date']})\n",
             f"Measured {env['date']} on {machine()} ({env['machine']}, no GPU, shared with other work), jax "
             f"{env['versions']['jax']}, code of commit {commit}: branch and bound with `split={V.SPLIT!r}` and "
             f"`alpha_steps={V.ALPHA_STEPS}` (the defaults), {a.timeout:g} s per instance. The {len(unknown)} instances "
             f"left unknown by the full run above, plus the {len(spot)} slowest decided ones as a regression check; the "
             f"other {len(before) - len(unknown) - len(spot)} were not re-run. Regenerate: "
             f"`python experiments/verify_acasxu.py --rerun DIR`.\n",
             f"- Unknown before, decided now: **{len(newly)} of {len(unknown)}**; wrong answers in the re-run: "
             f"**{len(wrong)}**; spot check: {len(spot) - len(changed)} of {len(spot)} same verdict, time now / before: "
             f"median {np.median(spot_ratio):.2f}x.",
             f"- With the other rows as measured above: **{n_dec} of {len(merged)} decided** (target >= 180: "
             f"{'met' if n_dec >= 180 else 'missed'}).",
             f"- Median time of the re-run instances {np.median(secs):.2f} s, total {secs.sum():.0f} s (median over all 186 "
             f"not re-measured: the full run above gave {np.median([r['seconds'] for r in before.values()]):.2f} s; "
             f"target <= 5 s).\n",
             jr.records.markdown_table(
                 ["network", "property", "published", "before", "before s", "now", "now s", "boxes"],
                 [(*_short(now[k]), now[k]["published"], before[k]["verdict"], round(before[k]["seconds"], 2),
                   now[k]["verdict"] + (" WRONG" if now[k]["wrong"] else ""), round(now[k]["seconds"], 2), now[k]["boxes"])
                  for k in unknown + spot])]
    md, js = out / "verify_acasxu.md", out / "verify_acasxu.json"
    text = md.read_text()
    cut = text.find("\n## Re-run of the unknown instances")  # a previous re-run section is replaced (kept in .previous)
    text = text if cut < 0 else text[:cut]
    for f in (md, js):
        f.replace(f.with_name(f.name + ".previous"))
    jr.records.write_text(md, text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    jr.records.write_json(js, {**old, "rerun": {"environment": env, "commit": commit, "cpu": machine(), "split": V.SPLIT,
                                                "alpha_steps": V.ALPHA_STEPS, "timeout": a.timeout, "rows": rows}})
    print("\n".join(lines[:5]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
