"""VNN-COMP 2021 image benchmarks (``mnistfc``, ``cifar10_resnet``) with ``jr.verify``: every instance
measured, beside every published tool's counts.

Reads the JSON lines that ``jaxrepair bench verify --benchmark B --log FILE`` appends (one per
finished instance) and the competition's published results, and writes
``experiments/results/verify_{B}.md`` and ``.json``: the machine, the date, decided / wrong against
the published majority, median and total time, per network, each published tool's counts on the
same instances (their machines and the 2021 time limits), and one row per instance::

    jaxrepair bench verify --vnncomp-dir ../shared/data/vnncomp2021 --benchmark mnistfc --timeout 30 --log mnistfc.jsonl
    python experiments/verify_vnncomp.py mnistfc.jsonl --benchmark mnistfc --vnncomp-dir ../shared/data/vnncomp2021

``--rerun-unknown S`` first re-runs, with ``S`` seconds each, the instances the log left unknown
(appending them to ``LOG.rerun.jsonl``); their rows then replace the first ones in the table, which
gives the counts at the first limit and after the re-run.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
from pathlib import Path

import numpy as np

import jaxrepair as jr
from jaxrepair.bench import _verify
from jaxrepair.suite import machine


def _rows(path, benchmark):
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("benchmark", benchmark) == benchmark]


def published_counts(results_csv: Path, benchmark: str, instances) -> list:
    """Each tool's ``(tool, holds, violated, decided)`` on ``instances`` (``{(onnx name, vnnlib name)}``)."""
    counts: dict = collections.defaultdict(collections.Counter)
    with open(results_csv) as f:
        for row in csv.DictReader(f):
            if row.get("benchmark", benchmark) != benchmark:
                continue
            key = (Path(row.get("onnx") or row["network"]).name, Path(row.get("vnnlib") or row["property"]).name)
            if key not in instances:
                continue
            r = row["result"].strip().lower()
            counts[row["tool"]]["holds" if r in ("holds", "unsat") else "violated" if r in ("violated", "sat") else "other"] += 1
    return sorted(((t, c["holds"], c["violated"], c["holds"] + c["violated"]) for t, c in counts.items()),
                  key=lambda r: -r[3])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="JSON lines from `jaxrepair bench verify --benchmark B --log`")
    p.add_argument("--benchmark", default="mnistfc", choices=["mnistfc", "cifar10_resnet"])
    p.add_argument("--vnncomp-dir", required=True, help="the folder bench verify read (for the published results)")
    p.add_argument("--rerun-unknown", type=float, metavar="S", help="re-run the unknown instances with S seconds each")
    p.add_argument("--note", default="", help="a line on how the log was made (the commit, what ran beside it)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    rows = _rows(a.log, a.benchmark)
    if not rows:
        p.error(f"{a.log}: no {a.benchmark} rows")
    first = {(r["onnx"], r["vnnlib"]): r for r in rows}
    rerun_log = Path(str(a.log) + ".rerun.jsonl")
    if a.rerun_unknown:
        unknown = [k for k, r in first.items() if r["verdict"] == "unknown"]
        done = {(r["onnx"], r["vnnlib"]) for r in _rows(rerun_log, a.benchmark)} if rerun_log.exists() else set()
        todo = [k for k in unknown if k not in done]  # a stopped re-run resumes
        if todo:
            _verify.run(a.vnncomp_dir, timeout=a.rerun_unknown, log=str(rerun_log), only=todo, benchmark=a.benchmark)
    again = {(r["onnx"], r["vnnlib"]): r for r in _rows(rerun_log, a.benchmark)} if rerun_log.exists() else {}
    rows = [again.get(k, r) for k, r in first.items()]
    first_decided = sum(r["verdict"] != "unknown" for r in first.values())
    _, inst_file, res_file = _verify.files(a.vnncomp_dir, a.benchmark)
    total = sum(1 for r in csv.reader(open(inst_file)) if r)
    env = jr.records.environment()
    secs = np.array([r["seconds"] for r in rows])
    decided = [r for r in rows if r["verdict"] != "unknown"]
    wrong = [r for r in rows if r["wrong"]]
    limits = sorted({r["timeout_s"] for r in rows})
    ours = {"safe": sum(r["verdict"] == "safe" for r in rows), "unsafe": sum(r["verdict"] == "unsafe" for r in rows)}
    tools = published_counts(res_file, a.benchmark, {(Path(r["onnx"]).name, Path(r["vnnlib"]).name) for r in rows})
    lines = [f"# VNN-COMP 2021 {a.benchmark} with jr.verify\n",
             f"Measured {env['date']} on {machine()} ({env['machine']}, no GPU), jax {env['versions']['jax']}; "
             f"{', '.join(f'{t:g}' for t in limits)} s per instance (the competition gave 120 s on mnistfc and 300 s on "
             f"cifar10_resnet, on its own machines). Regenerate: `jaxrepair bench verify --vnncomp-dir DIR --benchmark "
             f"{a.benchmark} --timeout {limits[0]:g} --log LOG` then `python experiments/verify_vnncomp.py LOG --benchmark "
             f"{a.benchmark} --vnncomp-dir DIR`.\n",
             *([f"{a.note}\n"] if a.note else []),
             *([f"The first limit decided {first_decided} of {len(first)}; {len(again)} of the {len(first) - first_decided} "
                f"instances it left unknown were re-run (in the instance file's order) with {', '.join(f'{t:g}' for t in sorted({r['timeout_s'] for r in again.values()}))} s each "
                f"(rows marked in `seconds limit`), and the counts below are after that re-run.\n"] if again else []),
             f"**{len(rows)} of {total} instances measured.** Decided **{len(decided)}** ({ours['safe']} safe, "
             f"{ours['unsafe']} unsafe), unknown {len(rows) - len(decided)}, **wrong {len(wrong)}** (against the majority "
             f"of the published decided answers); median {np.median(secs):.2f} s, total {secs.sum():.0f} s. Branching: "
             + ", ".join(f"{k} {v}" for k, v in collections.Counter(r.get("branching", "input") for r in rows).items())
             + ".\n"]
    per_net = collections.defaultdict(list)
    for r in rows:
        per_net[Path(r["onnx"]).name].append(r)
    lines.append(jr.records.markdown_table(
        ["network", "instances", "safe", "unsafe", "unknown", "wrong", "median s"],
        [(n, len(rs), sum(r["verdict"] == "safe" for r in rs), sum(r["verdict"] == "unsafe" for r in rs),
          sum(r["verdict"] == "unknown" for r in rs), sum(r["wrong"] for r in rs),
          round(float(np.median([r["seconds"] for r in rs])), 2)) for n, rs in per_net.items()]))
    lines.append("\n## Published (VNN-COMP 2021, the same instances; their machines, the competition's limits)\n")
    lines.append(jr.records.markdown_table(["tool", "holds", "violated", "decided"],
                                           [("**jaxrepair (this table)**", ours["safe"], ours["unsafe"], len(decided)),
                                            *tools]))
    lines.append("\n## Every instance\n")
    lines.append(jr.records.markdown_table(
        ["network", "property", "verdict", "published", "seconds", "seconds limit", "domains/boxes", "branching"],
        [(Path(r["onnx"]).stem, Path(r["vnnlib"]).stem, r["verdict"] + (" WRONG" if r["wrong"] else ""), r["published"],
          round(r["seconds"], 2), f"{r['timeout_s']:g}", r["boxes"], r.get("branching", "")) for r in rows]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"verify_{a.benchmark}.md"
    for f in (target, out / f"verify_{a.benchmark}.json"):  # the previous table is kept beside, never overwritten in place
        if f.exists():
            f.replace(f.with_name(f.name + ".previous"))
    jr.records.write_text(target, "\n".join(lines))
    jr.records.write_json(out / f"verify_{a.benchmark}.json", {"environment": env, "note": a.note, "rows": rows,
                                                              "first_rows": list(first.values()), "published": tools})
    print("\n".join(lines[:4]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
