"""The leaderboard of a suite store: per-entry statistics, causal vs random, targets, a plot.

Every figure is computed here from the per-row outcomes the cells stored (:mod:`jaxrepair.suite._stats`
says how); nothing is read from the test split to choose a method or a setting — those choices were
made on the select split inside each method.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from jaxrepair.suite import _stats
from jaxrepair.suite._acasxu import machine
from jaxrepair.suite._run import families, unpack


def _cells(records: list[dict]) -> dict:
    """``{(entry, method): [cell per seed, in seed order]}`` with the rows unpacked."""
    out: dict = {}
    for r in sorted(records, key=lambda r: (r["config"]["entry"], r["config"]["method"], r["config"]["seed"])):
        c, m = r["config"], r["metrics"]
        cell = {k: unpack(v) for k, v in m["outcomes"].items()}
        cell.update(seed=c["seed"], degenerate=m.get("degenerate"), seconds=r["timings"]["seconds"],
                    drawdown=m.get("drawdown"), resplit=m.get("resplit"), proven=m.get("proven"))
        out.setdefault((c["entry"], c["method"]), []).append(cell)
    return out


def _fmt_ci(v, ci, scale=100.0, digits=1, signed=False) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(scale * v)} [{f.format(scale * ci[0])}, {f.format(scale * ci[1])}]"


def _p(p) -> str:
    return "n/a" if p is None or not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-3 else "<0.001")


def leaderboard(records: list[dict], family: str) -> dict:
    """The statistics of every (entry, method) of a family's cells, the causal-vs-random comparisons
    (Holm-corrected across entries) and the family's targets."""
    from jaxrepair import repair

    cells = _cells(records)
    entries = list(dict.fromkeys(e for e, _ in cells))
    methods = list(dict.fromkeys(m for _, m in cells))
    rows = []
    for (e, m), cs in cells.items():
        st = _stats.cell_stats(cs)
        deg = sum(bool(c["degenerate"]) for c in cs)
        rows.append({"entry": e, "method": m, **st, "degenerate_seeds": deg,
                     "seconds_mean": float(np.mean([c["seconds"] for c in cs])),
                     "seconds_ci95": _stats.seed_interval([c["seconds"] for c in cs]),
                     # certified repair: on how many seeds the verifier proved the property (None: not recorded)
                     "proven_seeds": (sum(bool(c["proven"]) for c in cs)
                                      if all(c["proven"] is not None for c in cs) else None),
                     "drawdown_mean": (float(np.mean([c["drawdown"] for c in cs]))
                                       if all(c["drawdown"] is not None for c in cs) else None),
                     "drawdown_ci95": (_stats.seed_interval([c["drawdown"] for c in cs])
                                       if all(c["drawdown"] is not None for c in cs) else None),
                     "resplit": bool(cs[0]["resplit"])})
    # causal ranking vs its random control, per entry, Holm across the family's entries
    comparisons = []
    for m in methods:
        meth = repair.METHODS.get(m)
        ctrl = meth.control if meth is not None else None
        if ctrl is None or ctrl not in methods:
            continue
        per = []
        for e in entries:
            a, b = cells.get((e, m)), cells.get((e, ctrl))
            if not a or not b:
                continue
            seeds = sorted({c["seed"] for c in a} & {c["seed"] for c in b})
            ca = [c for c in a if c["seed"] in seeds]
            cb = [c for c in b if c["seed"] in seeds]
            per.append({"entry": e, "method": m, "control": ctrl, **_stats.compare(ca, cb)})
        adj = _stats.holm([c["violation_reduction"]["p"] for c in per]) if per else []
        for c, p in zip(per, adj):
            c["p_holm"] = p
            c["verdict"] = _stats.verdict(c, p)
        comparisons += per
    # each method across entries: the mean reduction (interval: _mean_ci), the worst accuracy change
    summary = []
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        reds = [r["violation_reduction"] for r in mine if np.isfinite(r["violation_reduction"])]
        summary.append({"method": m, "entries": len(mine),
                        "mean_reduction": float(np.mean(reds)) if reds else None,
                        "mean_reduction_ci95": _mean_ci([r for r in mine if np.isfinite(r["violation_reduction"])]),
                        "worst_accuracy_change_points": float(min(r["accuracy_change_points"] for r in mine)),
                        "degenerate_cells": int(sum(r["degenerate_seeds"] for r in mine)),
                        "significant_accuracy_losses": int(sum(r["p_accuracy_change"] < 0.05 and
                                                               r["accuracy_change_points"] < 0 for r in mine))})
    when = [datetime.datetime.fromtimestamp(r["created"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            for r in (min(records, key=lambda r: r["created"]), max(records, key=lambda r: r["created"]))]
    return {"family": family, "entries": entries, "methods": methods, "rows": rows, "comparisons": comparisons,
            "summary": summary, "targets": targets(rows, family), "measured": when,
            "machines": sorted({r["config"].get("machine", "") for r in records} - {""}),
            "repair_samples": sorted({r["config"]["settings"]["repair_samples"] for r in records}),
            "options": {m: o for m, o in sorted({r["config"]["method"]: r["config"]["settings"].get("options") or {}
                                                  for r in records}.items()) if o}}


def _mean_ci(rows: list[dict]) -> list[float] | None:
    """95% interval of the mean over entries of the reduction, treating the entries' estimates as
    independent normals with standard errors from their intervals (width / 3.92)."""
    if not rows:
        return None
    mu = np.mean([r["violation_reduction"] for r in rows])
    se = np.sqrt(np.sum([((r["ci95"]["violation_reduction"][1] - r["ci95"]["violation_reduction"][0]) / 3.92) ** 2
                         for r in rows])) / len(rows)
    return [float(mu - 1.96 * se), float(mu + 1.96 * se)]


def targets(rows: list[dict], family: str) -> dict:
    """Per entry, the methods that meet the family's target (degenerate seeds count as failures). An
    entry with no violation before on any seed's test rows has nothing to repair: its target is
    ``None`` (not met, not missed)."""
    fam = families()[family]
    out = {}
    for e in dict.fromkeys(r["entry"] for r in rows):
        mine = [r for r in rows if r["entry"] == e]
        if all(r["violation_before"] == 0 for r in mine):
            out[e] = {"met_by": [], "met": None, "why": "no violation before on the test rows: nothing to repair"}
            continue
        ok = [r["method"] for r in mine if r["degenerate_seeds"] == 0 and fam.meets is not None and fam.meets(r)]
        out[e] = {"met_by": ok, "met": bool(ok)}
    return out


def markdown(board: dict, env: dict, note: str = "") -> str:
    from jaxrepair import records

    fam = families()[board["family"]]
    rows = board["rows"]
    seeds = sorted({r["seeds"] for r in rows})
    head = [f"# Suite `{board['family']}`: {len(board['entries'])} entries × {len(board['methods'])} methods × "
            f"{'/'.join(map(str, seeds))} seeds\n",
            f"Cells measured {board['measured'][0]} – {board['measured'][1]} on "
            f"{', '.join(board['machines']) or env.get('cpu', env.get('device'))}; report written {env['date']}, jax "
            f"{env['versions']['jax']}. Regenerate: `jaxrepair suite {board['family']} --seeds {max(seeds)}"
            f"{' --methods ' + ' '.join(board['methods'])}"
            f"{''.join(f' --repair-samples {n}' for n in board.get('repair_samples', []) if n != fam.repair_samples)}"
            f"{''.join(f' --option {m}:{k}={json.dumps(v)}' for m, o in board.get('options', {}).items() for k, v in o.items())}"
            f"{'' if set(board['entries']) == set(fam.entries) else ' --entries ' + ' '.join(board['entries'])}` "
            f"(the report alone: `jaxrepair suite {board['family']} --report-only`).\n",
            *([note + "\n"] if note else []),
            "Every figure is on each seed's held-out test rows, as the mean over seeds, with a 95% interval from a "
            "two-stage paired bootstrap (seeds, then test rows within a seed; 2,000 replicates). p(acc) and p(viol): "
            "paired sign-flip permutation tests of after vs before (10,000 permutations, all seeds). Entries marked "
            "'re-split' draw a new stratified select/test split per seed from the rows the model never trained on. "
            "Settings (k, checkpoints, budgets) are chosen on the select split inside each method; the test rows are "
            "never looked at until this report. Degenerate results (a constant predictor, or accuracy at or below the "
            "majority rate) count as failures.\n",
            f"**Target** ({board['family']}): {fam.goal}.\n"]
    met = board["targets"]
    head.append(records.markdown_table(
        ["entry", "target met", "by"], [(e, "n/a" if t["met"] is None else "yes" if t["met"] else "**no**",
                                         t.get("why") or ", ".join(t["met_by"]) or "–")
                                        for e, t in met.items()]))
    summ = records.markdown_table(
        ["method", "entries", "mean reduction [95% CI]", "worst Δ accuracy (pts)", "entries with a significant loss",
         "degenerate cells"],
        [(s["method"], s["entries"], "n/a" if s["mean_reduction"] is None else
          _fmt_ci(s["mean_reduction"], s["mean_reduction_ci95"]), f"{s['worst_accuracy_change_points']:+.2f}",
          s["significant_accuracy_losses"], s["degenerate_cells"]) for s in board["summary"]])
    anchors = "".join(f"- **{a['tool']}** (published): {a['figure']} {100 * a['value']:.2f}% — {a['source']}. Its "
                      f"machine, models and splits differ from these.\n" for a in fam.anchors)
    drawdown = any(r["drawdown_mean"] is not None for r in rows)
    proofs = any(r.get("proven_seeds") is not None for r in rows)
    per_entry = records.markdown_table(
        ["entry", "method", "seeds", "violation before", "violation after", "reduction % [95% CI]",
         "Δ accuracy pts [95% CI]", "p(acc)", "p(viol)", *(["drawdown % [95% CI]"] if drawdown else []),
         *(["proven (seeds)"] if proofs else []),
         "degenerate", "s/cell [95% CI]", "test rows (property / accuracy)"],
        [(r["entry"] + (" (re-split)" if r["resplit"] else ""), r["method"], r["seeds"], f"{r['violation_before']:.4f}",
          f"{r['violation_after']:.4f}", _fmt_ci(r["violation_reduction"], r["ci95"]["violation_reduction"]),
          _fmt_ci(r["accuracy_change_points"], r["ci95"]["accuracy_change_points"], scale=1.0, digits=2, signed=True),
          _p(r["p_accuracy_change"]), _p(r["p_violation_change"]),
          *([_fmt_ci(r["drawdown_mean"], r["drawdown_ci95"], digits=2) if r["drawdown_mean"] is not None else "–"]
            if drawdown else []),
          *([f"{r['proven_seeds']}/{r['seeds']}" if r.get("proven_seeds") is not None else "–"] if proofs else []),
          f"{r['degenerate_seeds']}/{r['seeds']}" if r["degenerate_seeds"] else "0",
          _fmt_ci(r["seconds_mean"], r["seconds_ci95"], scale=1.0),
          f"{r['property_rows'][0]} / {r['accuracy_rows'][0]}"
          + ("" if len(set(r["accuracy_rows"])) == 1 else " (per seed: varies)")) for r in rows])
    comp = board["comparisons"]
    counts = {}
    for c in comp:
        counts.setdefault(c["method"], {"wins": 0, "tie": 0, "loses": 0, "n/a": 0})[c["verdict"]] += 1
    comp_md = records.markdown_table(
        ["entry", "causal", "random control", "Δ reduction (pts) [95% CI]", "Δ accuracy (pts) [95% CI]", "p", "p (Holm)",
         "seeds causal > random", "verdict"],
        [(c["entry"], c["method"], c["control"], _fmt_ci(c["violation_reduction"]["difference"],
                                                         c["violation_reduction"]["ci95"], signed=True),
          _fmt_ci(c["accuracy_change_points"]["difference"], c["accuracy_change_points"]["ci95"], scale=1.0, digits=2,
                  signed=True), _p(c["violation_reduction"]["p"]), _p(c["p_holm"]),
          f"{c['seeds_a_reduces_more']}/{c['seeds']}", c["verdict"]) for c in comp]) if comp else "(no pair ran)\n"
    verdicts = "".join(
        f"- **{m}** vs its random control: wins on {v['wins']}, ties on {v['tie']}, loses on {v['loses']} of "
        f"{sum(v.values()) - v['n/a']} entries (Holm-corrected at 5% across them)"
        + (f"; {v['n/a']} entries have no violation before to reduce" if v["n/a"] else "") + "." + (
            " Where it does not win, the causal ranking buys nothing measurable over random units at this k and "
            "budget: choose between them by cost (the random control needs no ACE)."
            if v["wins"] < sum(v.values()) - v["n/a"] else "") + "\n" for m, v in counts.items())
    return "\n".join([*head, "\n## Methods across entries\n", summ, anchors,
                      "\n## Causal localisation vs random units (same k, budget and steps)\n", verdicts, comp_md,
                      "\n## Every entry and method\n", per_entry,
                      f"\n![accuracy change against violation reduction](suite_{board['family']}.png)\n"])


def plot(board: dict, path: Path, *, floor: float = -10.0) -> Path | None:
    """One panel per entry: accuracy change against violation reduction per method, with the 95%
    interval whiskers; hollow markers for methods with degenerate seeds. Methods that lose more than
    ``-floor`` points are listed in the panel instead of stretching its scale."""
    from jaxrepair import records

    plt = records.pyplot()
    if plt is None:
        return None
    from matplotlib.lines import Line2D

    entries, methods = board["entries"], board["methods"]
    cols = min(4, len(entries))
    nrows = (len(entries) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols + 2.6, 3.6 * nrows + 0.6), squeeze=False)
    marks = "osD^v<>Pph*X"
    for ax, e in zip(axes.flat, entries):
        off = []
        for r in (r for r in board["rows"] if r["entry"] == e):
            i = methods.index(r["method"])
            x, y = 100 * r["violation_reduction"], r["accuracy_change_points"]
            if not np.isfinite(x):
                continue
            if y < floor:
                off.append(f"{r['method']}: {y:+.1f} pts, {x:.0f}%")
                continue
            xe = np.abs(np.array([[x], [x]]) - 100 * np.array(r["ci95"]["violation_reduction"])[:, None])
            ye = np.abs(np.array([[y], [y]]) - np.array(r["ci95"]["accuracy_change_points"])[:, None])
            color = f"C{i % 10}"
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt=marks[i % len(marks)], color=color, ms=6, lw=0.9, capsize=2,
                        mfc="none" if r["degenerate_seeds"] else color, alpha=0.9)
        if off:
            ax.text(0.02, 0.02, "off the chart:\n" + "\n".join(off), transform=ax.transAxes, fontsize=7, va="bottom",
                    color="dimgrey")
        if e in board["targets"] and board["targets"][e]["met"] is None:
            ax.text(0.5, 0.5, "no violation before on the test rows:\nnothing to repair (see the table)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, color="dimgrey")
        ax.axhline(0, color="grey", lw=0.7)
        ax.axhline(-0.5, color="grey", lw=0.7, ls="--")
        ax.axvline(90, color="grey", lw=0.7, ls=":")
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, floor - 0.5), max(hi, 1.0))
        ax.set_title(e, fontsize=10)
        ax.set_xlabel("violation reduction (%)")
        ax.set_ylabel("accuracy change (points)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(entries):]:
        ax.axis("off")
    handles = [Line2D([], [], ls="", marker=marks[i % len(marks)], color=f"C{i % 10}", label=m)
               for i, m in enumerate(methods)]
    handles += [Line2D([], [], color="grey", lw=0.7, ls="--", label="-0.5 points"),
                Line2D([], [], color="grey", lw=0.7, ls=":", label="90% reduction"),
                Line2D([], [], ls="", marker="o", color="0.4", mfc="none", label="degenerate seeds")]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False, title="method", title_fontsize=8)
    fig.suptitle(f"suite {board['family']}: mean over seeds, 95% intervals", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 2.5 / (4.3 * cols + 2.6), 0.96))
    return records.save_figure(fig, path, tight=False)


def report(store_path, out_dir=None, *, wanted=None, note: str = "") -> dict:
    """Writes ``suite_{family}.json``, ``.md`` and ``.png`` next to the store (or into ``out_dir``)
    from its cells (``wanted``: only these cell hashes). Returns the leaderboard and the file paths."""
    from jaxrepair import records
    from jaxrepair.models import write_atomic
    from jaxrepair.sweep import Store

    st = Store(store_path, readonly=True)
    try:
        recs = [r for r in st.records() if wanted is None or r["hash"] in wanted]
    finally:
        st.close()
    if not recs:
        raise ValueError(f"{store_path}: no suite cells to report")
    fams = {r["config"]["suite"] for r in recs}
    if len(fams) != 1:
        raise ValueError(f"{store_path}: cells of several suites {sorted(fams)}")
    family = fams.pop()
    seen: dict = {}
    for r in recs:  # one cell per (entry, method, seed): a store holding runs of other settings is ambiguous
        c = r["config"]
        key = (c["entry"], c["method"], c["seed"])
        if seen.setdefault(key, r["hash"]) != r["hash"]:
            raise ValueError(f"{store_path}: it holds {c['method']!r} on {c['entry']!r} seed {c['seed']} under more "
                             f"than one setting (--option / --repair-samples); report one run with "
                             f"jr.suite.report(store, wanted=its cell hashes), or give each run its own --out")
    board = leaderboard(recs, family)
    env = {**records.environment(), "cpu": machine()}
    out = Path(out_dir) if out_dir else Path(store_path).parent
    doc = {"environment": env, "note": note, **board,
           "methods_registry": {m: records_of(m) for m in board["methods"]}}
    files = {}
    for name, text in ((f"suite_{family}.json", records.dumps(doc)), (f"suite_{family}.md", markdown(board, env, note))):
        write_atomic(out / name, lambda f, t=text: f.write(t.encode()), overwrite=True)
        files[name.rsplit(".", 1)[1]] = str(out / name)
    png = plot(board, out / f"suite_{family}.png")
    if png is not None:
        files["png"] = str(png)
    return {"board": board, "files": files}


def records_of(name: str) -> dict | None:
    from jaxrepair import repair

    m = repair.METHODS.get(name)
    return m.to_json() if m is not None else None


__all__ = ["leaderboard", "markdown", "plot", "report", "targets"]
