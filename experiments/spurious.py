"""A known spurious correlation, repaired on a ResNet: neuron-level against feature-level methods.

The zoo entry ``fashion-spurious`` is a ResNet-18-layout network (basic blocks [2, 2, 2, 2], a
quarter of the width) trained on Fashion-MNIST at 32×32 whose 2-pixel border takes the label's
colour for 95% of the training images. The failure: accuracy on the decorrelated test set (border
colour independent of the label) against the in-distribution one, and the border colour's ACE on
the probability of the class it goes with (``jr.causal.feature_ace``).

Methods, each on the same repair data (``--repair-samples`` training images, their border
colours as trained, paired with the same image in another colour) and chosen on the val split:

* neuron level, on the layers after ``s4b1`` (``jr.repair.lower``: every batch is mapped through
  the first 7 blocks once), localising with the ACE of every channel of ``s4b2.relu1`` and ``s4b2``
  on the logit change a new border colour makes (16 values, the first 128 repair pairs): ``care`` (CARE's PSO settings), ``ace-pso``
  (the spurious preset: evosax PSO over factors of the top 10 channels), ``ace-finetune`` (Adam on
  the weights of the top-k channels, k chosen on select), ``random-finetune`` (the same with a
  random ranking: the ablation), ``finetune-head`` (every weight after the cut);
* feature level, on the whole network: ``irm`` (IRMv1 fine-tuning with the two environments the
  spurious feature forms: training images whose border agrees with the label and those where it
  does not), ``cf-augment`` (fine-tuning on the images and copies with a random border colour),
  ``clp`` (counterfactual logit pairing with the same copies), ``tde`` (de-confounded training of a
  causal-normalised head on the frozen pooled features, TDE at inference, α chosen on select).

Every repaired network is evaluated with the zoo's metrics: in-distribution, decorrelated and
corner-patch test accuracy (the patch: the same colours in another place on a black border, a
shift no method saw), invariance violation, and the ACE of the border and of the patch colour.

Usage::

    python experiments/spurious.py --data-dir ../shared/data [--methods care irm ...] [--out experiments/results]

Writes ``spurious.{json,md}`` and ``spurious.png`` (the accuracy–robustness trade-off, Pareto front
marked); existing files are moved aside to ``*.previous``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
from pathlib import Path

import numpy as np

import jaxrepair as jr
from jaxrepair.suite import machine as cpu_name

ENTRY = "fashion-spurious"
CUT = "s4b1"
SITES = ["s4b2.relu1", "s4b2"]
LOCALISE = 128  # repair pairs the ACE localisation averages over
NEURON = ["care", "ace-pso", "ace-finetune", "random-finetune", "finetune-head"]
FEATURE = ["irm", "cf-augment", "clp", "tde"]
METHODS = NEURON + FEATURE
METRICS = ["test_accuracy", "decorrelated_accuracy", "patch_accuracy", "invariance_violation", "spurious_ace", "patch_ace",
           "degenerate"]


# Each neuron-level label is a registry method (jr.repair.METHODS) on the conv sites SITES; CARE's
# effect here is the task's (the raw-output change), so ``care`` ranks on the same ACE localisation.
NEURON_LABELS = {"care": ("care", {"sites": SITES}), "ace-pso": ("ace-pso", {"sites": SITES}),
                 "ace-finetune": ("ace-finetune", {}), "random-finetune": ("random-finetune", {"sites": SITES}),
                 "finetune-head": ("finetune-all", {})}


def neuron_method(m, head, low, loc, seed):
    method, options = NEURON_LABELS[m]
    return jr.repair.get_method(method)(head, low, seed=seed, localization=loc, **options)


@dataclasses.dataclass(frozen=True)
class TDEApply:
    """The whole network with its dense head replaced by a de-confounded head read with TDE."""

    graph: object
    head: jr.feature.Head
    alpha: float

    def __call__(self, p, x):
        f = jr.models.run(self.graph, p["net"], x, all_sites=True)["pool"]
        return jr.feature.tde_logits(p["head"], f, self.head, p["d"], self.alpha)


def select_score(task, apply, params, a=0.5) -> float:
    """The objective ``(1−a)·violation + a·(1−accuracy)`` on the select split."""
    d = task.data["select"]
    v = float(task.objective.prop.rate(apply, params, d["property"]))
    acc = float(jr.properties.accuracy(apply, params, d["accuracy"]))
    return (1 - a) * v + a * (1 - acc)


def feature_method(m, bench, task, seed, steps):
    """``(model or (apply, params), chosen hyper-parameters)``, chosen on the select split."""
    model = bench.model
    tr = bench.splits["train"]
    border = jr.data.ColourBorder(bench.entry.border)
    if m == "tde":
        feats = {k: np.asarray(jr.models.site_values(model, "pool", bench.splits[k]["x"]))
                 for k in ("train", "val_decorrelated")}
        head = jr.feature.Head()
        p, d = jr.feature.train_tde(feats["train"], tr["y"], head=head, steps=1500, hidden=128, feat=64, seed=seed)
        yv = bench.splits["val_decorrelated"]["y"]
        alphas = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
        val = {a: float(np.mean(np.argmax(jr.feature.tde_logits(p, feats["val_decorrelated"], head, d, a), -1) == yv))
               for a in alphas}
        best = max(alphas, key=lambda a: (val[a], -a))
        params = {"net": jr.models.functional(model)[1], "head": p, "d": d}
        return (TDEApply(model.graph, head, best), params), {"alpha": best, "val_decorrelated_accuracy": val}
    if m == "irm":
        agree = tr["c"] == tr["y"]
        envs = [(tr["x"][agree], tr["y"][agree]), (tr["x"][~agree], tr["y"][~agree])]
        cands = {w: jr.feature.irm_finetune(model, envs, penalty_weight=w, steps=steps, seed=seed, progress=True)
                 for w in (10.0, 1000.0)}
        label = "penalty_weight"
    else:
        mode = "augment" if m == "cf-augment" else "clp"
        cands = {lam: jr.feature.counterfactual_finetune(model, tr["x"], tr["y"], border.recolour, mode=mode, lam=lam,
                                                         steps=steps, seed=seed, progress=True)
                 for lam in ((1.0,) if mode == "augment" else (0.1, 1.0))}
        label = "lambda"
    scores = {k: select_score(task, *jr.models.functional(v)) for k, v in cands.items()}
    best = min(scores, key=scores.get)
    return cands[best], {label: best, "select_objective": scores}


def evaluate(bench, model_or_apply) -> dict:
    """The zoo's metrics for a network, or for an ``(apply, params)`` pair (the TDE head), with the
    degenerate-result check on the decorrelated test images."""
    dec = bench.splits["test_decorrelated"]
    if isinstance(model_or_apply, jr.Network):
        return {**jr.zoo.evaluate(bench, model_or_apply),
                "degenerate": jr.repair.degeneracy(model_or_apply, dec)["degenerate"]}
    apply, params = model_or_apply
    m = jr.zoo.evaluate_spurious(apply, bench.splits, bench.entry.border, params=params)
    pred = jr.properties.predict(apply, params, dec["x"])
    return {**m, "degenerate": jr.repair.degeneracy_of_predictions(pred, dec["y"])["degenerate"]}


def run(methods, data_dir, repair_samples, seed, steps) -> dict:
    bench = jr.zoo.load(ENTRY, progress=True, data_dir=data_dir)
    task = jr.repair.from_zoo(bench, repair_samples=repair_samples, seed=seed)
    before = jr.zoo.evaluate(bench)
    before["degenerate"] = jr.repair.degeneracy(bench.model, bench.splits["test_decorrelated"])["degenerate"]
    rows = [{"method": "none (trained model)", "level": "-", **{k: before[k] for k in METRICS}, "time_s": 0.0,
             "select_objective": select_score(task, *jr.models.functional(bench.model))}]
    prep = {}
    if any(m in NEURON for m in methods):
        t = time.perf_counter()
        head, low = jr.repair.lower(bench.model, task, CUT)
        # ACE costs one head pass per (channel, value, pair): localise on the first LOCALISE pairs
        low = dataclasses.replace(low, localize_batch={k: v[:LOCALISE] for k, v in low.localize_batch.items()})
        prep["lower_s"] = time.perf_counter() - t
        t = time.perf_counter()
        loc = jr.repair.localize(head, low, sites=SITES)
        prep["localize_s"] = time.perf_counter() - t
        prep["top10"] = [(n.site, n.unit, float(n.score)) for n in loc.ranking()[:10]]
        print(f"[spurious] lowered past {CUT} in {prep['lower_s']:.1f}s; ACE of {len(loc.ranking())} channels in "
              f"{prep['localize_s']:.1f}s", file=sys.stderr, flush=True)
    for m in methods:
        print(f"[spurious] {m}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        if m in NEURON:
            r = neuron_method(m, head, low, loc, seed)
            repaired, info = jr.models.attach(bench.model, r.model), {"selected": len(r.selected), **{
                k: r.config[k] for k in ("k", "k_values") if k in r.config}}
            meth = jr.repair.get_method(NEURON_LABELS[m][0])  # charged the ACE it ranks on (care takes it too)
            uses_loc = meth.ranking == "ace" or "localization" in meth.options
            dt = time.perf_counter() - t + prep["lower_s"] + (prep["localize_s"] if uses_loc else 0.0)
            level = "neuron"
        else:
            repaired, info = feature_method(m, bench, task, seed, steps)
            dt = time.perf_counter() - t
            level = "feature"
        after = evaluate(bench, repaired)
        sel = select_score(task, *(jr.models.functional(repaired) if isinstance(repaired, jr.Network) else repaired))
        rows.append({"method": m, "level": level, **{k: after[k] for k in METRICS}, "time_s": dt,
                     "select_objective": sel, "choice": info})
        r = rows[-1]
        print(f"[spurious] {m}: decorrelated {r['decorrelated_accuracy']:.4f} in-dist {r['test_accuracy']:.4f} "
              f"ACE {r['spurious_ace']:.3f} ({dt:.0f}s)", file=sys.stderr, flush=True)
    return {"rows": rows, "prep": prep, "before": before, "entry": bench.entry.config(),
            "zoo_record": bench.model.meta.get("zoo", {})}


def pareto_front(points, rows):
    """Indices of the non-degenerate rows whose point no other such point beats on both coordinates
    (higher is better)."""
    ok = [i for i, r in enumerate(rows) if not r["degenerate"]]
    keep = [i for i in ok if not any(points[j][0] >= points[i][0] and points[j][1] >= points[i][1]
                                     and points[j] != points[i] for j in ok)]
    return sorted(keep, key=lambda i: points[i][0])


def table(rows) -> str:
    head = ["method", "level", "decorrelated acc.", "in-distribution acc.", "corner-patch acc. (shift)",
            "invariance violation", "border ACE", "patch ACE", "time (s)", "Pareto", "degenerate"]
    pts = [(r["test_accuracy"], r["decorrelated_accuracy"]) for r in rows]
    front = set(pareto_front(pts, rows))
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        out.append("| " + " | ".join([
            r["method"], r["level"], f"{100 * r['decorrelated_accuracy']:.2f}%", f"{100 * r['test_accuracy']:.2f}%",
            f"{100 * r['patch_accuracy']:.2f}%", f"{100 * r['invariance_violation']:.2f}%", f"{r['spurious_ace']:.3f}",
            f"{r['patch_ace']:.3f}", f"{r['time_s']:.0f}", "yes" if i in front else "",
            f"**{r['degenerate']}**" if r["degenerate"] else ""]) + " |")
    return "\n".join(out) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    colours = plt.get_cmap("tab10")
    for ax, (ykey, ylabel, better) in zip(axes, [
            ("decorrelated_accuracy", "decorrelated test accuracy (%)", 1),
            ("spurious_ace", "border colour's ACE on its class (prob., ×100)", -1)]):
        pts = [(100 * r["test_accuracy"], better * 100 * r[ykey]) for r in rows]
        front = pareto_front(pts, rows)
        ax.plot([pts[i][0] for i in front], [better * pts[i][1] for i in front], color="grey", lw=1, ls="--",
                label="Pareto front")
        for i, r in enumerate(rows):
            marker = "x" if r["level"] == "-" else ("o" if r["level"] == "neuron" else "s")
            ax.scatter([pts[i][0]], [better * pts[i][1]], color="k" if r["level"] == "-" else colours(i % 10),
                       marker=marker, s=55, label=f"{r['method']} ({r['level']})" if r["level"] != "-" else r["method"])
        ax.set_xlabel("in-distribution test accuracy (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy against robustness (up and right is better)", fontsize=10)
    axes[1].set_title("accuracy against the shortcut's strength (down and right is better)", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("fashion-spurious (ResNet-18 layout, quarter width): repairs of a border-colour shortcut "
                 "(o: neuron level, s: feature level)", fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="where fashion-mnist/ is (default $JAXREPAIR_DATA)")
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    p.add_argument("--repair-samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps of the feature-level methods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jr.data.check_files(jr.zoo.entry(ENTRY).dataset, jr.data.data_dir(args.data_dir, need=ENTRY))  # before any work
    t0 = time.perf_counter()
    res = run(args.methods, args.data_dir, args.repair_samples, args.seed, args.steps)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{cpu_name()}, no GPU"
    record = {"experiment": "spurious", "date": stamp, "machine": machine, "environment": jr.records.environment(),
              "repair_samples": args.repair_samples, "steps": args.steps, "seed": args.seed, "cut": CUT,
              "sites": SITES, "total_s": time.perf_counter() - t0, **res}
    for name in ("spurious.json", "spurious.md", "spurious.png"):
        if (out / name).exists():
            (out / name).rename(out / (name + ".previous"))
    jr.records.write_json(out / "spurious.json", record)
    plot(res["rows"], out / "spurious.png")
    z = res["zoo_record"]
    md = [f"# Spurious border colour on a ResNet: repairs (`python experiments/spurious.py --data-dir DIR`)\n",
          f"Measured {stamp} on {machine}; total {record['total_s']:.0f} s. Entry `{ENTRY}`: "
          f"{z.get('dataset', {}).get('parameters', '?')} parameters, trained in "
          f"{z.get('dataset', {}).get('train_time_s', float('nan')):.0f} s; border colour = label for "
          f"{100 * z.get('dataset', {}).get('colour_agreement_train', float('nan')):.1f}% of the training images.\n",
          "Accuracies are on the 10,000 Fashion-MNIST test images: in-distribution (border colour = label for 95%), "
          "decorrelated (colour independent of the label) and corner patch (black border, a random palette colour in "
          "a 6×6 corner square: a shift no method saw). Invariance violation: test images whose class changes with "
          "another border colour. ACE: mean over colours k of E[p(class k) | do(colour = k)] − mean over colours "
          "(1,000 decorrelated test images; 0 = no shortcut).\n",
          table(res["rows"]), "",
          f"Neuron-level methods: lowered past `{CUT}` in {res['prep'].get('lower_s', 0):.1f} s, ACE of the "
          f"{2 * 128} channels of {SITES} in {res['prep'].get('localize_s', 0):.1f} s (both included in the times). "
          "Feature-level methods change the whole network; hyper-parameters chosen on the val split "
          "(objective (1−a)·violation + a·(1−decorrelated accuracy), a = 0.5):\n"]
    for r in res["rows"][1:]:
        md.append(f"- {r['method']}: {r.get('choice')}")
    (out / "spurious.md").write_text("\n".join(md) + "\n")
    print((out / "spurious.md").read_text())


if __name__ == "__main__":
    main()
