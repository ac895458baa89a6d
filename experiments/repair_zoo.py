"""Every zoo entry through the CARE preset, the other strategies and the baselines.

Writes ``experiments/results/repair_zoo.{json,md}`` and plots (fitness curves, Pareto fronts,
neuron scores) under ``experiments/results/repair_zoo/``. All figures are on each entry's held-out
test split (fairness: exhaustive individual-fairness violation; backdoor: attack success on
eligible test digits; ACAS Xu: 10,000 uniform samples of the property region, drawdown on its
non-violating samples). Usage::

    python experiments/repair_zoo.py [--entries census-sex ...] [--methods care random prune ...]
        [--out experiments/results] [--no-pareto]

Existing result files are moved aside to ``*.previous`` (never silently overwritten).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import jaxrepair as jr

# Per kind: neurons repaired (CARE: 3 for fairness, ~1% of a layer for backdoor, ~half a layer for
# ACAS Xu; we use more for fairness, see the note in the README), factor bounds, objective weight a.
KIND = jr.repair.DEFAULTS
METHODS = ["care", "cma_es", "de", "snes", "open_es", "random", "prune", "finetune-all", "finetune-masked"]


def run_entry(name: str, methods, out: Path, pareto: bool, seed: int) -> list[dict]:
    bench = jr.zoo.load(name, progress=True)
    task = jr.repair.from_zoo(bench, seed=seed)
    cfg = KIND[task.kind]
    t = time.perf_counter()
    loc = jr.repair.localize(bench.model, task, sites=jr.repair.candidate_sites(bench.model))
    loc_s = time.perf_counter() - t
    top = [n for n in loc.ranking()][: cfg["k"]]
    d = out / "repair_zoo"
    d.mkdir(parents=True, exist_ok=True)
    jr.records.plot_scores(loc, d / f"{name}-scores.png")
    rows = []
    for m in methods:
        print(f"[experiments] {name}: {m}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        if m in ("care", "cma_es", "de", "snes", "open_es", "random"):
            strat = "pso" if m in ("care", "random") else m
            r = jr.repair(bench.model, task, k=cfg["k"], bounds=cfg["bounds"], a=cfg["a"], strategy=strat, seed=seed,
                          localization=loc, selection="random" if m == "random" else None)
            if m == "care":
                jr.repair.plot_history(r, d / f"{name}-fitness.png")
        elif m == "prune":
            r = jr.repair.prune(bench.model, task, top)
        elif m == "finetune-all":
            r = jr.repair.finetune(bench.model, task, a=cfg["a"])
        elif m == "finetune-masked":
            r = jr.repair.finetune(bench.model, task, neurons=top, a=cfg["a"])
        else:
            raise ValueError(f"unknown method {m!r}")
        wall = time.perf_counter() - t + (loc_s if m not in ("random", "finetune-all") else 0.0)
        s = r.summary()
        rows.append({"entry": name, "kind": task.kind, "method": m, **s, "wall_s": wall,
                     "generations": r.search.get("generations_run"), "evaluations": r.search.get("evaluations"),
                     "selected": [(n.site, n.unit) for n in r.selected], "after": r.after, "before": r.before,
                     "task_info": task.info})
        red = s["violation_reduction"]
        print(f"    violation {s['violation_before']:.4f} -> {s['violation_after']:.4f}"
              f" ({'n/a' if red is None else f'{100 * red:.1f}%'}), accuracy drop {s['accuracy_drop_points']:.2f} pts,"
              f" {wall:.1f}s", file=sys.stderr, flush=True)
    if pareto and task.kind != "backdoor":  # the digits CNN front (7 a × 20 particles × conv stack) is CPU-heavy
        front = jr.repair.pareto(bench.model, task, a_values=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9), k=cfg["k"],
                                 bounds=cfg["bounds"], localization=loc)
        jr.repair.plot_pareto(front, d / f"{name}-pareto.png")
        jr.records.write_json(d / f"{name}-pareto.json", front)
    return rows


def _fmt(v, pct=False):
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.4f}"


def table(rows) -> str:
    head = ["entry", "method", "violation before", "violation after", "reduction", "accuracy before",
            "accuracy after", "drop (pts)", "drawdown", "time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["entry"], r["method"], _fmt(r["violation_before"]), _fmt(r["violation_after"]),
            _fmt(r["violation_reduction"], True), _fmt(r["accuracy_before"]), _fmt(r["accuracy_after"]),
            f"{r['accuracy_drop_points']:.2f}", _fmt(r.get("drawdown"), True) if "drawdown" in r else "",
            f"{r['wall_s']:.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def causal_vs_random(rows) -> str:
    by = {}
    for r in rows:
        by.setdefault(r["entry"], {})[r["method"]] = r
    lines = ["| entry | ACE top-k + PSO (after) | random k + PSO (after) | causal better? |", "|---|---|---|---|"]
    wins = total = 0
    for e, m in by.items():
        if "care" in m and "random" in m:
            fa = _objective(m["care"])
            fr = _objective(m["random"])
            win = fa < fr - 1e-9
            tie = abs(fa - fr) <= 1e-9
            wins += win
            total += 1
            lines.append(f"| {e} | {fa:.4f} | {fr:.4f} | {'yes' if win else ('tie' if tie else 'no')} |")
    lines.append(f"\nObjective `(1-a)·violation + a·(1-accuracy)` on the test split (lower is better); "
                 f"causal selection wins on {wins} of {total} entries.\n")
    return "\n".join(lines)


def _objective(r):
    a = KIND[r["kind"]]["a"]
    return (1 - a) * r["violation_after"] + a * (1 - r["accuracy_after"])


def acceptance(rows) -> str:
    care = [r for r in rows if r["method"] == "care"]
    fair = [r for r in care if r["kind"] == "fairness" and r["violation_reduction"] is not None]
    lines = []
    if fair:
        mean_red = float(np.mean([r["violation_reduction"] for r in fair]))
        worst = max(r["accuracy_drop_points"] for r in fair)
        lines.append(f"- fairness (CARE preset): mean violation reduction {100 * mean_red:.1f}% (target ≥ 62%), "
                     f"worst accuracy drop {worst:.2f} pts (target ≤ 1)")
    for r in care:
        if r["kind"] == "backdoor":
            lines.append(f"- {r['entry']}: attack success {100 * r['violation_after']:.2f}% (target < 1%), "
                         f"clean accuracy drop {r['accuracy_drop_points']:.2f} pts (target ≤ 2)")
        if r["kind"] == "safety":
            lines.append(f"- {r['entry']}: violation {100 * r['violation_after']:.2f}% (target < 1%), "
                         f"drawdown {100 * r['drawdown']:.2f}% (target ≤ 5%)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", nargs="*", default=list(jr.zoo.ENTRIES))
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pareto", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    for name in a.entries:
        rows += run_entry(name, a.methods, out, not a.no_pareto, a.seed)
    env = jr.records.environment()
    rec = {"environment": env, "kind_config": KIND, "rows": rows, "wall_s": time.perf_counter() - t0,
           "command": " ".join(["python", "experiments/repair_zoo.py", *(argv if argv is not None else sys.argv[1:])])}
    for f in ("repair_zoo.json", "repair_zoo.md"):
        if (out / f).exists():
            (out / f).replace(out / (f + ".previous"))
    jr.records.write_json(out / "repair_zoo.json", rec)
    md = (f"# Repair of the zoo\n\nMeasured {env['date']} on {env['device']} ({env['machine']}), "
          f"jax {env['versions']['jax']}, evosax {env['versions']['evosax']}; total {rec['wall_s']:.0f}s.\n"
          f"Regenerate: `{rec['command']}`.\nPer-kind settings: `{json.dumps(KIND)}`; all searches 20 × 100 "
          f"with CARE's early stop; figures on held-out test splits.\n\n## Acceptance\n\n{acceptance(rows)}\n"
          f"## All methods\n\n{table(rows)}\n## Causal vs random selection\n\n{causal_vs_random(rows)}")
    jr.records.write_text(out / "repair_zoo.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
