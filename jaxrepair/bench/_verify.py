"""``jaxrepair bench verify``: every instance of a VNN-COMP 2021 benchmark — ``acasxu`` (186),
``mnistfc`` (90), ``cifar10_resnet`` (72) — against the published results.

Reads the competition's folder the user names (``--vnncomp-dir``): the benchmark's
``{benchmark}_instances.csv`` with its ONNX nets and VNN-LIB files, in that folder or in its
``{benchmark}/`` subfolder, and the published results, ``results_2021_{benchmark}.csv`` or the
``results_2021.csv`` of every tool's rows (filtered to the benchmark), in the folder or beside the
subfolder. Runs :func:`jaxrepair.verify.verify` on each instance with its timeout (or ``--timeout``),
and compares each decided verdict with the majority of the published tools' answers
(``holds``/``UNSAT`` = safe, ``violated``/``SAT`` = unsafe), leaving out the tools some instance shows
wrong (:func:`contradicted`: on ACAS Xu none, on mnistfc RPM and nnv). A wrong answer is any decided verdict
that disagrees. One JSON line per instance is appended to ``--log`` as it finishes, so a stopped run
keeps what it measured.
"""

from __future__ import annotations

import collections
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

_SAFE, _UNSAFE = ("holds", "unsat"), ("violated", "sat")
BENCHMARKS = ("acasxu", "mnistfc", "cifar10_resnet")
CONTRADICTED_BY = 3  # a tool is left out of the majority once this many others unanimously answer against it


def answers(results_csv: Path, benchmark: str | None = None) -> dict:
    """``{(onnx name, vnnlib name): {tool: "safe" | "unsafe"}}``: every published decided answer (of
    ``benchmark``'s rows only, when the file has a ``benchmark`` column)."""
    out: dict = collections.defaultdict(dict)
    with open(results_csv) as f:
        for row in csv.DictReader(f):
            if benchmark is not None and row.get("benchmark", benchmark) != benchmark:
                continue
            r = row["result"].strip().lower()
            key = (Path(row.get("onnx") or row["network"]).name, Path(row.get("vnnlib") or row["property"]).name)
            if r in _SAFE + _UNSAFE:
                out[key][row.get("tool", f"row{len(out[key])}")] = "safe" if r in _SAFE else "unsafe"
    return out


def contradicted(votes: dict, quorum: int = CONTRADICTED_BY) -> set:
    """Tools shown wrong: on some instance at least ``quorum`` other tools agree, unanimously, on the
    other answer (VNN-COMP 2021 did not check every counterexample; RPM, for one, answers ``violated`` on
    mnistfc instances that nine tools prove)."""
    bad = set()
    for by_tool in votes.values():
        for tool, answer in by_tool.items():
            others = [a for t, a in by_tool.items() if t != tool]
            if len(others) >= quorum and all(a != answer for a in others):
                bad.add(tool)
    return bad


def published(results_csv: Path, benchmark: str | None = None) -> dict:
    """``{(onnx name, vnnlib name): "safe" | "unsafe"}``: the majority of the published decided answers
    of the tools no instance contradicts (:func:`contradicted`); instances only such tools decided have
    no published answer."""
    votes = answers(results_csv, benchmark)
    bad = contradicted(votes)
    out = {}
    for key, by_tool in votes.items():
        count = collections.Counter(a for t, a in by_tool.items() if t not in bad)
        if count:
            out[key] = count.most_common(1)[0][0]
    return out


def files(vnncomp_dir: str, benchmark: str) -> tuple:
    """``(benchmark folder, instances csv, results csv)``; ``FileNotFoundError`` naming what is missing."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, not {benchmark!r}")
    d = Path(vnncomp_dir)
    for folder in (d, d / benchmark):
        inst = folder / f"{benchmark}_instances.csv"
        if inst.is_file():
            for res in (folder / f"results_2021_{benchmark}.csv", folder / "results_2021.csv",
                        folder.parent / "results_2021.csv"):
                if res.is_file():
                    return folder, inst, res
            raise FileNotFoundError(f"{folder}: no published results (results_2021_{benchmark}.csv or "
                                    "results_2021.csv) there or in the folder above")
    raise FileNotFoundError(f"{d}: no {benchmark}_instances.csv there or in {d / benchmark} (--vnncomp-dir names "
                            f"VNN-COMP 2021's {benchmark} folder or the folder holding it)")


def run(vnncomp_dir: str, *, timeout: float | None = None, log: str | None = None, limit: int | None = None,
        falsifier_only: bool = False, progress: bool = True, only=None, benchmark: str = "acasxu") -> dict:
    """``only``: ``(onnx name, vnnlib name)`` pairs to run (a re-run of some instances), in the file's order."""
    import jaxrepair as jr

    d, inst_file, res_file = files(vnncomp_dir, benchmark)
    truth = published(res_file, benchmark)
    instances = [r for r in csv.reader(open(inst_file)) if r]
    if only is not None:
        wanted = {tuple(p) for p in only}
        missing = wanted - {(r[0], r[1]) for r in instances}
        if missing:
            raise ValueError(f"not instances of {inst_file}: {sorted(missing)}")
        instances = [r for r in instances if (r[0], r[1]) in wanted]
    if limit:
        instances = instances[:limit]
    rows, nets, props = [], {}, {}
    t_all = time.perf_counter()
    for onnx_name, vnnlib_name, t_out in instances:
        net = nets.get(onnx_name) or nets.setdefault(onnx_name, jr.convert.from_onnx(d / onnx_name))
        prop = props.get(vnnlib_name) or props.setdefault(vnnlib_name, jr.properties.from_vnnlib(d / vnnlib_name))
        v = jr.verify(net, prop, timeout=float(timeout or t_out), falsifier_only=falsifier_only)
        want = truth.get((Path(onnx_name).name, Path(vnnlib_name).name))
        row = {"benchmark": benchmark, "onnx": onnx_name, "vnnlib": vnnlib_name, "timeout_s": float(timeout or t_out),
               "verdict": v.verdict, "seconds": v.seconds, "boxes": v.boxes, "branching": v.branching,
               "published": want, "wrong": v.verdict in ("safe", "unsafe") and want is not None and v.verdict != want}
        if v.counterexample is not None:
            row["counterexample"] = np.asarray(v.counterexample).tolist()
        rows.append(row)
        if log:
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
        if progress:
            print(f"[bench verify] {len(rows)}/{len(instances)} {onnx_name} {vnnlib_name}: {v.verdict} "
                  f"({v.seconds:.1f}s, {v.boxes} {'boxes' if v.branching == 'input' else 'domains'}){' WRONG' if row['wrong'] else ''}", file=sys.stderr, flush=True)
    secs = [r["seconds"] for r in rows]
    decided = [r for r in rows if r["verdict"] != "unknown"]
    return {"benchmark": benchmark, "instances": len(rows), "decided": len(decided), "safe": sum(r["verdict"] == "safe" for r in rows),
            "unsafe": sum(r["verdict"] == "unsafe" for r in rows), "unknown": len(rows) - len(decided),
            "wrong": sum(r["wrong"] for r in rows), "median_s": float(np.median(secs)) if secs else None,
            "total_s": float(np.sum(secs)), "wall_s": time.perf_counter() - t_all, "rows": rows}
