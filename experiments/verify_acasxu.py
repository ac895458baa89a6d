"""VNN-COMP 2021 ACAS Xu with ``jr.verify``: the table of every instance measured, beside the published results.

Reads the JSON lines that ``jaxrepair bench verify --log FILE`` appends (one per finished
instance; the benchmark can be stopped and its log still read) and writes
``experiments/results/verify_acasxu.md`` with the machine, date, counts, wrong answers against the
published majority, median and total time, and one row per instance::

    jaxrepair bench verify --vnncomp-dir ../shared/data/vnncomp-acasxu --timeout 60 --log verify.jsonl
    python experiments/verify_acasxu.py verify.jsonl [--falsifier falsifier.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import jaxrepair as jr


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="JSON lines from `jaxrepair bench verify --log`")
    p.add_argument("--falsifier", help="JSON lines from the same bench with --falsifier-only")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--note", default="", help="a line on how the log was made (the commit, what ran beside it)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    rows = _rows(a.log)
    env = jr.records.environment()
    secs = np.array([r["seconds"] for r in rows])
    decided = [r for r in rows if r["verdict"] != "unknown"]
    wrong = [r for r in rows if r["wrong"]]
    pub = {"safe": sum(r["published"] == "safe" for r in rows), "unsafe": sum(r["published"] == "unsafe" for r in rows)}
    lines = [f"# VNN-COMP 2021 ACAS Xu with jr.verify\n",
             f"Measured {env['date']} on {env['device']} ({env['machine']}, 2 cores shared with other work), jax "
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


if __name__ == "__main__":
    raise SystemExit(main())
