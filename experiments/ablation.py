"""Feature- vs neuron-level repair, per failure type: the best of each level on the same task.

For each failure type one zoo entry and one repair task (``jr.repair.from_zoo(bench,
repair_samples=..., seed)``), so every method repairs on the same repair split, is chosen on the
same select (val) split and is reported on the same test split:

* fairness, ``census-sex``: neuron level ``preset`` (``jr.repair``: ACE + evosax PSO over factors of
  the top 10 units), ``care`` (CARE's settings), ``ace-finetune`` (``jr.repair.localized_finetune``
  on the ACE ranking); feature level ``cf-clp`` and ``cf-augment`` (``jr.feature.counterfactual_training``
  with counterfactuals from the default linear SCM) and ``irm`` (``jr.feature.irm_finetune``, the
  sex groups as environments);
* backdoor, ``mnist-badnets``: neuron level as above on the dense layers after ``flatten``
  (``jr.repair.lower``, put back with ``jr.models.attach``); feature level on the whole network:
  ``cf-augment`` / ``cf-clp`` (``jr.feature.counterfactual_finetune`` with the trigger as the feature the
  network must become invariant to) and ``irm`` (environments: the clean repair images and their
  triggered copies, both with the true labels);
* safety, one ACAS Xu φ2 task (``acasxu-n5_7-phi2``): neuron level as above; feature level does not
  apply (the reason is in the table);
* spurious correlation, ``fashion-spurious``: read from ``experiments/results/spurious.json``
  (written by ``experiments/spurious.py``; not rerun here).

Within a level, the candidate with the lowest select-split objective ``(1−a)·violation +
a·(1−accuracy)`` (a = 0.5) among those that keep the task kind's accuracy budget on the select split
(``jr.repair.PRESETS[kind].max_drop``) and are not degenerate there is the level's best; the test
split is never looked at to choose. Times include lowering and localisation.

Usage::

    python experiments/ablation.py --data-dir ../shared/data [--failures fairness backdoor safety spurious]
        [--out experiments/results]

Writes ``ablation.{json,md,png}``; existing files are moved aside to ``*.previous``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxrepair as jr
from jaxrepair.suite import machine as cpu_name

FAILURES = ["fairness", "backdoor", "safety", "spurious"]
ENTRIES = {"fairness": "census-sex", "backdoor": "mnist-badnets", "safety": "acasxu-n5_7-phi2",
           "spurious": "fashion-spurious"}
A_SELECT = 0.5  # weight of (1 − accuracy) in the selection objective (the presets' a; spurious.py's too)
SAFETY_NO_FEATURE = (
    "no input feature or environment carries the defect: φ2 is an output constraint (COC must not score "
    "highest) over an input region, not a dependence on a feature that should not matter; counterfactual "
    "augmentation / logit pairing would need a feature to change and the correct advisory for the region, which "
    "φ2 does not give (it only rules one out), and IRM has no environments that differ in a spurious feature")


@dataclasses.dataclass(frozen=True)
class StampTrigger:
    """The counterfactual for ``counterfactual_finetune``: the same images with the trigger stamped on
    (the key is ignored: the trigger is fixed). Frozen, so hashable."""

    trigger: object  # jr.data.Trigger

    def __call__(self, x, key):
        return self.trigger.stamp(x)


def log(msg: str) -> None:
    print(f"[ablation] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measuring a candidate


def select_figures(task, model, acc0: float, max_drop: float) -> dict:
    """Select-split violation, accuracy, objective, budget and degeneracy of ``model``."""
    v, acc = jr.repair.metrics(task.objective, model, task.data["select"])
    deg = jr.repair.degeneracy(model, task.data["select"]["accuracy"], task.objective.decide)["degenerate"]
    return {"select_violation": v, "select_accuracy": acc, "select_objective": (1 - A_SELECT) * v + A_SELECT * (1 - acc),
            "within_budget": bool(acc >= acc0 - max_drop - 1e-12), "select_degenerate": deg}


def candidate(failure, entry, level, method, model, task, before, sel0, max_drop, time_s, after=None, **extra) -> dict:
    """One measured candidate: select figures (for choosing) and test figures (for reporting)."""
    after = after if after is not None else task.report(model)
    row = {"failure": failure, "entry": entry, "level": level, "method": method, "time_s": time_s,
           **select_figures(task, model, sel0, max_drop),
           "violation_before": before["violation"], "violation_after": after["violation"],
           "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
           "drop_points": 100 * (before["accuracy"] - after["accuracy"]), "degenerate": after.get("degenerate"), **extra}
    log(f"{entry} {level}/{method}: violation {row['violation_before']:.4f} -> {row['violation_after']:.4f}, "
        f"accuracy {row['accuracy_before']:.4f} -> {row['accuracy_after']:.4f}, select obj "
        f"{row['select_objective']:.4f}{'' if row['within_budget'] else ' (over budget)'}, {time_s:.1f}s")
    return row


def best_of(rows: list[dict], level: str, *, key: str = "select_objective") -> dict | None:
    """The level's best by the select objective among the candidates within budget and not degenerate
    on select; when none is, the lowest objective overall, flagged."""
    mine = [r for r in rows if r["level"] == level]
    if not mine:
        return None
    ok = [r for r in mine if r.get("within_budget", True) and not r.get("select_degenerate")]
    best = min(ok or mine, key=lambda r: r[key])
    return {**best, "none_within_budget": not ok}


# --------------------------------------------------------------------------- the three measured failure types


def neuron_level(failure, entry, model, task, before, acc0, max_drop, seed, steps, generations, *, cut=None) -> list[dict]:
    """``preset``, ``care`` and ``ace-finetune`` on ``model`` (or on its head past ``cut``, put back)."""
    t = time.perf_counter()
    head, low = jr.repair.lower(model, task, cut) if cut else (model, task)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    loc = jr.repair.localize(head, low)
    loc_s = time.perf_counter() - t
    log(f"{entry}: lowered in {lower_s:.1f}s, ACE localisation {loc_s:.1f}s")
    rows = []
    care, care_loc_s = "care", 0.0  # care localises inside, with CARE's own effect, on pre-activation sites
    care_kw = {}
    if task.kind == "safety":
        # CARE's effects are fairness's and backdoors' (jr.repair.localization_effect); for a safety
        # property CARE's search runs on the ACE ranking of the pre-activation units by the task's own
        # effect (the violation margin of the property).
        t = time.perf_counter()
        care_kw["localization"] = jr.repair.localize(head, low, sites=jr.repair.candidate_sites(head, "factor",
                                                                                               "pre-activation"))
        care, care_loc_s = "care (task effect)", time.perf_counter() - t
    runs = {"preset": (lambda: jr.repair(head, low, seed=seed, localization=loc, generations=generations), loc_s),
            care: (lambda: jr.repair(head, low, preset="care", seed=seed, generations=generations, **care_kw),
                   care_loc_s),
            "ace-finetune": (lambda: jr.repair.localized_finetune(head, low, loc.ranking(), steps=steps), loc_s)}
    for m, (run, uses) in runs.items():
        log(f"{entry}: neuron/{m}")
        t = time.perf_counter()
        r = run()
        dt = time.perf_counter() - t + lower_s + uses
        whole = jr.models.attach(model, r.model) if cut else r.model
        rows.append(candidate(failure, entry, "neuron", m, whole, task, before, acc0, max_drop, dt,
                              after=None if cut else r.after, selected=len(r.selected),
                              config={k: r.config.get(k) for k in ("preset", "k", "k_values", "max_drop", "a", "strategy")
                                      if k in r.config}))
    return rows


def fairness(seed: int, steps: int, generations=None) -> tuple[list[dict], dict]:
    name = ENTRIES["fairness"]
    bench = jr.zoo.load(name, progress=True)
    task = jr.repair.from_zoo(bench, seed=seed)
    cfg = jr.repair.PRESETS["fairness"]
    before = task.report(bench.model)
    acc0 = jr.repair.metrics(task.objective, bench.model, task.data["select"])[1]
    rows = neuron_level("fairness", name, bench.model, task, before, acc0, cfg.max_drop, seed, steps, generations)
    ds = jr.data.load_tabular(bench.entry.dataset)
    attr = bench.entry.sensitive
    values = ds.sensitive_values(attr)
    t = time.perf_counter()
    scm = jr.causal.fit_default(ds, key=jax.random.key(seed))
    scm_s = time.perf_counter() - t
    for mode in ("clp", "augment"):
        log(f"{name}: feature/cf-{mode}")
        t = time.perf_counter()
        r = jr.feature.counterfactual_training(bench.model, task, attribute=attr, values=values, columns=ds.columns,
                                               scm=scm, mode=mode, steps=steps, max_drop=cfg.max_drop, seed=seed)
        rows.append(candidate("fairness", name, "feature", f"cf-{mode}", r.model, task, before, acc0, cfg.max_drop,
                              time.perf_counter() - t + scm_s, after=r.after,
                              counterfactual_violation_after=r.after.get("counterfactual_violation"),
                              counterfactual_violation_before=r.before.get("counterfactual_violation")))
    rep = task.data["repair"]["accuracy"]
    col = bench.prop.column
    x, y = np.asarray(rep["x"]), np.asarray(rep["y"])
    envs = [(x[x[:, col] == v], y[x[:, col] == v]) for v in np.asarray(bench.prop.values)]
    for w in (10.0, 1000.0):
        log(f"{name}: feature/irm (penalty {w:g})")
        t = time.perf_counter()
        m = jr.feature.irm_finetune(bench.model, envs, penalty_weight=w, steps=steps, learning_rate=1e-3, seed=seed)
        rows.append(candidate("fairness", name, "feature", f"irm (λ={w:g})", m, task, before, acc0, cfg.max_drop,
                              time.perf_counter() - t))
    budget = {"repair_data": f"{len(y)} training rows (the repair split)", "max_drop": cfg.max_drop,
              "finetune_steps": steps, "search": "the fairness preset's PSO (k=10) / CARE's PSO (k=13)",
              "env_sizes": [len(e[1]) for e in envs]}
    return rows, budget


def backdoor(data_dir, seed: int, steps: int, repair_samples: int, generations=None) -> tuple[list[dict], dict]:
    name = ENTRIES["backdoor"]
    bench = jr.zoo.load(name, progress=True, data_dir=data_dir)
    task = jr.repair.from_zoo(bench, repair_samples=repair_samples, seed=seed)
    cfg = jr.repair.PRESETS["backdoor"]
    before = task.report(bench.model)
    acc0 = jr.repair.metrics(task.objective, bench.model, task.data["select"])[1]
    rows = neuron_level("backdoor", name, bench.model, task, before, acc0, cfg.max_drop, seed, steps, generations,
                        cut="flatten")
    rep = task.data["repair"]["accuracy"]
    x, y = np.asarray(rep["x"]), np.asarray(rep["y"])
    stamp = StampTrigger(bench.prop.trigger)
    for mode in ("augment", "clp"):
        log(f"{name}: feature/cf-{mode}")
        t = time.perf_counter()
        m = jr.feature.counterfactual_finetune(bench.model, x, y, stamp, mode=mode, steps=steps, seed=seed)
        rows.append(candidate("backdoor", name, "feature", f"cf-{mode}", m, task, before, acc0, cfg.max_drop,
                              time.perf_counter() - t))
    log(f"{name}: feature/irm")
    t = time.perf_counter()
    envs = [(x, y), (np.asarray(stamp(jnp.asarray(x), None)), y)]
    m = jr.feature.irm_finetune(bench.model, envs, steps=steps, seed=seed)
    rows.append(candidate("backdoor", name, "feature", "irm (clean / triggered)", m, task, before, acc0, cfg.max_drop,
                          time.perf_counter() - t))
    budget = {"repair_data": f"{len(y)} clean training images and their triggered copies (the repair split)",
              "max_drop": cfg.max_drop, "finetune_steps": steps,
              "search": "the backdoor preset's PSO (k=5) / CARE's PSO (k=13), on the dense layers after flatten",
              "whole_network": "feature-level methods train every weight of the network (conv layers included); "
                               "neuron-level ones change the dense layers after flatten"}
    return rows, budget


def safety(seed: int, steps: int, generations=None) -> tuple[list[dict], dict]:
    name = ENTRIES["safety"]
    bench = jr.zoo.load(name, progress=True)
    task = jr.repair.from_zoo(bench, seed=seed)
    cfg = jr.repair.PRESETS["safety"]
    before = task.report(bench.model)
    acc0 = jr.repair.metrics(task.objective, bench.model, task.data["select"])[1]
    rows = neuron_level("safety", name, bench.model, task, before, acc0, cfg.max_drop, seed, steps, generations)
    budget = {"repair_data": f"{len(task.data['repair']['property']['x'])} region samples (all violating ones found "
                             f"among 100,000) + {len(task.data['repair']['accuracy']['x'])} labelled by the original "
                             "network's advisories", "max_drop": cfg.max_drop,
              "accuracy": "domain fidelity: share of uniform samples of the input domain whose advisory is kept"}
    return rows, budget


# --------------------------------------------------------------------------- the spurious benchmark (read only)


def spurious(path: Path) -> tuple[list[dict], dict] | tuple[None, str]:
    """Candidates from ``experiments/spurious.py``'s record, or ``(None, why)`` when it is not there."""
    if not path.exists():
        return None, (f"{path} does not exist yet: run `python experiments/spurious.py --data-dir DIR`, then re-run "
                      "this script to fill this section")
    rec = json.loads(path.read_text())
    rows = rec.get("rows", [])
    base = [r for r in rows if r.get("level") == "-"]
    if not base:
        return None, f"{path} has no row with level '-' (the trained model); cannot compute the figures before repair"
    b = base[0]
    out = []
    for r in rows:
        if r.get("level") not in ("neuron", "feature"):
            continue
        out.append({"failure": "spurious", "entry": ENTRIES["spurious"], "level": r["level"], "method": r["method"],
                    "time_s": r["time_s"], "select_objective": r["select_objective"],
                    "violation_before": b["invariance_violation"], "violation_after": r["invariance_violation"],
                    "accuracy_before": b["decorrelated_accuracy"], "accuracy_after": r["decorrelated_accuracy"],
                    "drop_points": 100 * (b["decorrelated_accuracy"] - r["decorrelated_accuracy"]),
                    "in_distribution_before": b["test_accuracy"], "in_distribution_after": r["test_accuracy"],
                    "spurious_ace_before": b["spurious_ace"], "spurious_ace_after": r["spurious_ace"]})
    budget = {"source": str(path), "date": rec.get("date"), "machine": rec.get("machine"),
              "repair_data": f"{rec.get('repair_samples')} training images paired with a recoloured copy",
              "finetune_steps": rec.get("steps"), "selection": "lowest select_objective on val, as spurious.py records it "
              "(no separate accuracy budget)"}
    return out, budget


# --------------------------------------------------------------------------- report


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


LABELS = {"fairness": ("flip violation", "test accuracy"), "backdoor": ("attack success", "clean test accuracy"),
          "safety": ("violation rate (region)", "domain fidelity"),
          "spurious": ("invariance violation", "decorrelated accuracy")}


def summary_table(results: dict) -> str:
    head = ["failure type", "model", "level", "best (of candidates, chosen on select)", "violation before → after",
            "accuracy before → after", "drop (pts)", "time (s)", "note"]
    rows = []
    for f in FAILURES:
        if f not in results:
            continue
        res = results[f]
        if res.get("missing"):
            rows.append([f, ENTRIES[f], "both", "—", "—", "—", "—", "—", f"not measured: {res['missing']}"])
            continue
        for level in ("neuron", "feature"):
            b = res["best"].get(level)
            if b is None:
                rows.append([f, ENTRIES[f], level, "does not apply", "—", "—", "—", "—", res["not_applicable"].get(level, "")])
                continue
            note = []
            if b.get("none_within_budget"):
                note.append("no candidate kept the accuracy budget on select: lowest objective shown")
            if b.get("degenerate"):
                note.append(f"degenerate on test: {b['degenerate']}")
            if f == "spurious":
                note.append(f"in-distribution {pct(b['in_distribution_before'])} → {pct(b['in_distribution_after'])}, "
                            f"border ACE {b['spurious_ace_before']:.3f} → {b['spurious_ace_after']:.3f}")
            n = sum(r["level"] == level for r in res["candidates"])
            rows.append([f, ENTRIES[f], level, f"{b['method']} (of {n})", f"{pct(b['violation_before'])} → {pct(b['violation_after'])}",
                         f"{pct(b['accuracy_before'])} → {pct(b['accuracy_after'])}", f"{b['drop_points']:.2f}",
                         f"{b['time_s']:.1f}", "; ".join(note)])
    return jr.records.markdown_table(head, rows)


def candidates_table(results: dict) -> str:
    head = ["failure type", "level", "method", "select violation", "select accuracy", "select objective",
            "within budget", "test violation", "test accuracy", "drop (pts)", "time (s)"]
    rows = []
    for f in FAILURES:
        for r in results.get(f, {}).get("candidates", []):
            rows.append([f, r["level"], r["method"], pct(r.get("select_violation")), pct(r.get("select_accuracy")),
                         f"{r['select_objective']:.4f}", {True: "yes", False: "**no**"}.get(r.get("within_budget"), "n/a"),
                         pct(r["violation_after"]), pct(r["accuracy_after"]), f"{r['drop_points']:.2f}", f"{r['time_s']:.1f}"])
    return jr.records.markdown_table(head, rows)


def paragraph(f: str, res: dict) -> str:
    """What the comparison shows, from this run's figures only."""
    if res.get("missing"):
        return f"**{f}** — not measured in this run: {res['missing']}."
    nb, fb = res["best"].get("neuron"), res["best"].get("feature")
    vl, al = LABELS[f]

    def fig(b):
        return (f"{b['method']}: {vl} {pct(b['violation_before'])} → {pct(b['violation_after'])}, {al} "
                f"{pct(b['accuracy_before'])} → {pct(b['accuracy_after'])}, "
                f"{b['time_s']:.1f} s")

    if fb is None:
        return (f"**{f}** ({ENTRIES[f]}) — neuron level, best {fig(nb)}. Feature level does not apply: "
                f"{res['not_applicable']['feature']}.")
    def which(n, f_, less_is_better=True):
        if n == f_:
            return "neither level"
        return ("neuron" if (n < f_) == less_is_better else "feature") + " level"

    def lost(d):
        return f"{d:.2f} points lost" if d >= 0 else f"{-d:.2f} points gained"

    text = (f"**{f}** ({ENTRIES[f]}) — neuron level, best {fig(nb)}; feature level, best {fig(fb)}. "
            f"Lower test {vl}: {which(nb['violation_after'], fb['violation_after'])} (neuron "
            f"{pct(nb['violation_after'])}, feature {pct(fb['violation_after'])}); higher {al}: "
            f"{which(nb['accuracy_after'], fb['accuracy_after'], False)} (neuron {lost(nb['drop_points'])}, feature "
            f"{lost(fb['drop_points'])}); faster: {which(nb['time_s'], fb['time_s'])} (neuron {nb['time_s']:.1f} s, "
            f"feature {fb['time_s']:.1f} s).")
    if f == "backdoor":
        text += (" The neuron-level repairs change only the dense layers after `flatten`; the feature-level ones train "
                 "every weight of the network.")
    if f == "spurious":
        text += (f" The border colour's ACE: {nb['spurious_ace_before']:.3f} → {nb['spurious_ace_after']:.3f} (neuron) and "
                 f"→ {fb['spurious_ace_after']:.3f} (feature); in-distribution accuracy {pct(nb['in_distribution_after'])} "
                 f"vs {pct(fb['in_distribution_after'])}.")
    if f == "fairness":
        cf = [r for r in res["candidates"] if r.get("counterfactual_violation_after") is not None]
        if cf:
            text += (" Counterfactual-fairness violation (default linear SCM, test split) before "
                     f"{cf[0]['counterfactual_violation_before']:.4f}; after " +
                     ", ".join(f"{r['method']} {r['counterfactual_violation_after']:.4f}" for r in cf) + ".")
    return text


def plot(results: dict, path: Path) -> None:
    plt = jr.records.pyplot()
    if plt is None:
        return
    fs = [f for f in FAILURES if f in results and not results[f].get("missing")]
    if not fs:
        return
    cols = 2 if len(fs) > 2 else len(fs)
    rows_ = -(-len(fs) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6.2 * cols, 4.6 * rows_), squeeze=False)
    for ax in axes.flat[len(fs):]:
        ax.set_visible(False)
    for ax, f in zip(axes.flat, fs):
        res = results[f]
        c = res["candidates"]
        b0 = c[0]
        ax.scatter([100 * b0["violation_before"]], [100 * b0["accuracy_before"]], marker="x", color="k", s=70,
                   label="before repair", zorder=3)
        for level, marker, colour in (("neuron", "o", "tab:blue"), ("feature", "s", "tab:orange")):
            mine = [r for r in c if r["level"] == level]
            if not mine:
                continue
            ax.scatter([100 * r["violation_after"] for r in mine], [100 * r["accuracy_after"] for r in mine],
                       marker=marker, facecolors="none", edgecolors=colour, s=45, label=f"{level} level (candidates)")
            for i, r in enumerate(mine):  # staggered, so that coinciding candidates stay readable
                ax.annotate(r["method"], (100 * r["violation_after"], 100 * r["accuracy_after"]), fontsize=6.5,
                            color=colour, xytext=(4, -9 - 7 * i if level == "neuron" else 4 + 7 * i),
                            textcoords="offset points")
            b = res["best"][level]
            ax.scatter([100 * b["violation_after"]], [100 * b["accuracy_after"]], marker=marker, color=colour, s=90,
                       label=f"{level} level best: {b['method']}", zorder=4)
        vl, al = LABELS[f]
        if f == "backdoor":  # repaired models sit near 0%, the trained one at 100%
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(-0.1, 150)
        ax.set_xlabel(f"{vl} on test (%)")
        ax.set_ylabel(f"{al} (%)")
        ax.set_title(f"{f}: {ENTRIES[f]}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Feature- vs neuron-level repair, test split: every candidate (hollow) and each level's choice on "
                 "the select split (filled)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, results: dict, args, argv, total: float, pending: list, earlier: list) -> str:
    """Writes ``ablation.{json,md,png}`` for what has run so far (``pending``: failure types still to run)."""
    env = jr.records.environment()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.platform()}, {cpu_name()}, no GPU"
    command = this_command(argv)
    commands = [c for c in earlier if c != command] + [command]
    record = {"experiment": "ablation", "date": stamp, "machine": machine, "environment": env, "command": command,
              "commands": commands,
              "seed": args.seed, "steps": args.steps, "select_a": A_SELECT, "total_s": total, "partial": pending, "results": results}
    for name in ("ablation.json", "ablation.md"):  # main moved older files aside: these are this run's partial ones
        (out / name).unlink(missing_ok=True)
    jr.records.write_json(out / "ablation.json", record)
    plot(results, out / "ablation.png")
    budgets = []
    for f in FAILURES:
        if f in results and not results[f].get("missing"):
            budgets.append(f"- **{f}** ({ENTRIES[f]}): " + "; ".join(f"{k.replace('_', ' ')}: {v}"
                                                                        for k, v in results[f]["budget"].items()))
    md = [f"# Feature- vs neuron-level repair, per failure type\n",
          f"Measured {stamp} on {machine} (shared with other jobs), jax {jax.__version__}; this command took "
          f"{total:.0f} s. Regenerate: " + ", then ".join(f"`{c}`" for c in commands) + ".\n",
          *([" ".join(f"{f}: measured {results[f]['measured']['date']} by `{results[f]['measured']['command']}` "
                      f"({results[f].get('wall_s', 0):.0f} s)." for f in FAILURES
                      if f in results and "measured" in results[f]) + "\n"] if len(commands) > 1 else []),
          *([f"**Partial record: {', '.join(pending)} not run yet (the run was still going or was stopped).**\n"]
            if pending else []),
          "Each failure type has one repair task (`jr.repair.from_zoo`): every method repairs on its repair split, the "
          "best of each level is chosen on the select (val) split — lowest objective (1−a)·violation + a·(1−accuracy), "
          f"a = {A_SELECT}, among the candidates that keep the kind's accuracy budget (`max_drop`) on select and are "
          "not degenerate there — and the figures are the test split's. Times include lowering and localisation.\n",
          "## Best of each level\n", summary_table(results),
          "\n## What the comparison shows\n", *[paragraph(f, results[f]) + "\n" for f in FAILURES if f in results],
          "\n## Budget (the same for both levels within a failure type)\n", *budgets,
          f"\nNeuron-level candidates: `preset` (`jr.repair(model, task)`: the kind's preset, ACE + evosax PSO), `care` "
          f"(CARE's settings) and `ace-finetune` (`jr.repair.localized_finetune` on the ACE ranking, k chosen on "
          f"select); every gradient method takes {args.steps} Adam steps.\n",
          "\n## Every candidate\n", candidates_table(results)]
    if "spurious" in results and not results["spurious"].get("missing"):
        md.append(f"\nSpurious rows are read from `{args.spurious_json}` ({results['spurious']['budget'].get('date')}, "
                  f"{results['spurious']['budget'].get('machine')}); they have no select violation/accuracy columns, only "
                  "the objective spurious.py recorded.\n")
    jr.records.write_text(out / "ablation.md", "\n".join(md) + "\n")
    return "\n".join(md)


def this_command(argv) -> str:
    return " ".join(["python", "experiments/ablation.py", *(argv if argv is not None else sys.argv[1:])])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="where mnist/ is (default $JAXREPAIR_DATA)")
    p.add_argument("--failures", nargs="*", default=FAILURES, choices=FAILURES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps of every gradient method")
    p.add_argument("--backdoor-repair-samples", type=int, default=1000)
    p.add_argument("--spurious-json", default="experiments/results/spurious.json")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (10 steps, 2 search generations, 200 backdoor images): checks the pipeline, "
                        "its figures mean nothing")
    p.add_argument("--merge", action="store_true",
                   help="keep the other failure types' results from OUT/ablation.json and rerun only --failures")
    p.add_argument("--out", default="experiments/results")
    args = p.parse_args(argv)
    generations = None
    if args.quick:
        args.steps, generations, args.backdoor_repair_samples = 10, 2, 200
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "backdoor" in args.failures:  # every file checked before any work
        jr.data.check_files(jr.zoo.entry(ENTRIES["backdoor"]).dataset,
                            jr.data.data_dir(args.data_dir, need=ENTRIES["backdoor"]))
    results, earlier = {}, []
    if args.merge:
        if not (out / "ablation.json").exists():
            raise ValueError(f"--merge keeps the results in {out / 'ablation.json'}, which does not exist")
        prev = json.loads((out / "ablation.json").read_text())
        results = {f: r for f, r in prev["results"].items() if f not in args.failures and not r.get("missing")}
        for r in results.values():
            r.setdefault("measured", {"date": prev["date"], "command": prev["command"]})
        earlier = prev.get("commands") or [prev["command"]]
    for name in ("ablation.json", "ablation.md", "ablation.png"):
        if (out / name).exists():
            (out / name).rename(out / (name + ".previous"))
    t0 = time.perf_counter()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for n, f in enumerate(args.failures):
        if n:  # what has run so far survives a stopped run
            write(out, results, args, argv, time.perf_counter() - t0, args.failures[n:], earlier)
        log(f"=== {f}")
        t = time.perf_counter()
        try:
            if f == "fairness":
                cands, budget = fairness(args.seed, args.steps, generations)
            elif f == "backdoor":
                cands, budget = backdoor(args.data_dir, args.seed, args.steps, args.backdoor_repair_samples, generations)
            elif f == "safety":
                cands, budget = safety(args.seed, args.steps, generations)
        except Exception as err:  # one failure type's error must not cost the others' figures
            traceback.print_exc()
            results[f] = {"missing": f"the run failed: {type(err).__name__}: {err}"}
            continue
        if f == "spurious":
            cands, budget = spurious(Path(args.spurious_json))
            if cands is None:
                print(f"NOTE: the spurious-correlation section is not filled: {budget}", flush=True)
                results[f] = {"missing": budget}
                continue
        results[f] = {"candidates": cands, "budget": budget, "wall_s": time.perf_counter() - t,
                      "measured": {"date": stamp, "command": this_command(argv)},
                      "best": {lv: best_of(cands, lv) for lv in ("neuron", "feature")},
                      "not_applicable": {"feature": SAFETY_NO_FEATURE} if f == "safety" else {}}
    md = write(out, results, args, argv, time.perf_counter() - t0, [], earlier)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
