"""Generalisation of a repair across domains: repair on one distribution, evaluate on shifted ones.

Sections (``--sections``; each writes its part of ``cross_domain.{json,md}`` and its plots):

``mnist-backdoor``
    The ``mnist-badnets`` zoo model is repaired by the methods of ``experiments/backdoor_images.py``
    (imported from that script: same task, lowering past ``flatten``, localisation and method
    settings) on clean MNIST training images and their triggered copies only. Then every repaired
    model and the unrepaired one are evaluated on the clean test set and on every corruption ×
    severity of ``jr.data.corrupt`` (shift, rotate, noise, blur, contrast at levels 1–5, each cell
    seeded from ``--seed``), in two trigger modes:

    * **trigger after**: the image is corrupted, then the trigger is stamped on (an attacker who
      adds the patch to a shifted photo: the patch is intact, the digit is not);
    * **trigger with**: the image is stamped, then corrupted together with its trigger (the same
      key, so the same shift/angle/noise as its clean copy: the patch moves, turns or blurs too).

    Reported per model and cell: clean accuracy on the corrupted images, attack success (triggered
    non-target images classified as the target) in both modes, and the target rate without a trigger
    (the same images untriggered, for what the corruption alone sends to the target).

``spurious-patch``
    The repairs of ``experiments/spurious.py`` (a border-colour shortcut on a ResNet) evaluated on a
    second spurious feature no method saw: the palette colours in a corner square instead of the
    border (read from that experiment's ``spurious.json``; run it first).

A section is a function ``(args) -> {"record", "markdown", "plots"}`` in ``SECTIONS``; sections not
run this time are carried over from the previous ``cross_domain.json`` so one can be rerun alone.

Usage::

    python experiments/cross_domain.py --data-dir ../shared/data [--sections mnist-backdoor]
        [--methods care pso ...] [--out experiments/results]

Existing result files are moved aside to ``*.previous``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxrepair as jr
from jaxrepair.suite import machine as cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backdoor_images  # noqa: E402  (the backdoor experiment's task setup and methods, not a copy)

NAME = "cross_domain"
BACKDOOR_METHODS = ["care", "pso", "prune", "finetune-all", "ace-finetune", "ace-finetune-preserve",
                    "random-finetune"]
HOLD_POINTS = 0.5  # a repair holds at a cell when the trigger adds at most this many points of target rate
MODES = {"after": "trigger stamped after corrupting", "with": "trigger corrupted with the image"}


# ----------------------------------------------------------------------------------------------
# mnist-backdoor


def corrupted_views(x, trigger, kind, severity, key) -> dict:
    """The test images of one cell: ``clean`` (corrupted, no trigger), ``after`` and ``with``."""
    if kind == "none":
        return {"clean": x, "after": trigger.stamp(x), "with": trigger.stamp(x)}
    xc = jr.data.corrupt(x, kind, severity, key)
    return {"clean": xc, "after": trigger.stamp(xc), "with": jr.data.corrupt(trigger.stamp(x), kind, severity, key)}


def head_metrics(heads, prop, feats, y) -> dict:
    """Per model: accuracy, attack success in both modes and the untriggered target rate, from the
    values at ``flatten`` (every method changes only the layers after it)."""
    y = jnp.asarray(y)
    eligible = np.asarray(prop.eligible({"y": y})) > 0
    out = {}
    for name, head in heads.items():
        apply, params = jr.models.functional(head)
        pred = jr.properties.predict(apply, params, feats["clean"])
        row = {"accuracy": float(np.mean(pred == np.asarray(y))),
               "target_rate_untriggered": float(np.mean(pred[eligible] == prop.target))}
        for mode in MODES:
            hits = jr.properties.violations(prop, apply, params, {"x": feats["clean"], "x_trig": feats[mode], "y": y})
            row[f"attack_success_{mode}"] = float(hits.sum() / eligible.sum())
        out[name] = row
    return out


def mnist_backdoor(args) -> dict:
    t0 = time.perf_counter()
    p = backdoor_images.prepare(args.entry, args.data_dir, args.repair_samples, args.seed,
                                interchange=any(m.startswith("interchange") for m in args.methods))
    bench = p["bench"]
    heads, repairs = {"unrepaired": p["head"]}, {}
    for m in args.methods:
        print(f"[cross_domain] repair: {m}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        r = backdoor_images.run_method(m, p["head"], p["low"], p["loc"], p["inter"], p["cfg"], args.seed)
        heads[m] = r.model
        repairs[m] = {"time_s": p["lower_s"] + backdoor_images.localisation_s(m, p) + time.perf_counter() - t,
                      "selected": [(n.site, n.unit) for n in r.selected]}
    # the whole networks' figures by the zoo's own evaluation, to check the head shortcut against
    official = {m: jr.zoo.evaluate(bench, jr.models.attach(bench.model, h)) for m, h in heads.items()}
    test = bench.splits["test"]
    n = len(test["y"]) if args.test_samples is None else min(args.test_samples, len(test["y"]))
    take = np.sort(np.random.default_rng(args.seed).choice(len(test["y"]), n, replace=False))
    x, y = jnp.asarray(test["x"][take]), test["y"][take]
    trigger, prop = bench.prop.trigger, bench.prop
    cells = [("none", 0)] + [(k, s) for k in jr.data.CORRUPTIONS for s in range(1, 6)]
    base = jax.random.key(args.seed)
    rows = []
    for ki, (kind, sev) in enumerate(cells):
        t = time.perf_counter()
        key = jax.random.fold_in(base, ki)  # each cell its own draw
        views = corrupted_views(x, trigger, kind, sev, key)
        feats = {v: jr.models.site_values(bench.model, "flatten", img) for v, img in views.items()}
        for model, r in head_metrics(heads, prop, feats, y).items():
            rows.append({"model": model, "corruption": kind, "severity": sev, **r})
        print(f"[cross_domain] {kind} {sev}: {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
    check = {m: {"accuracy_whole": official[m]["test_accuracy"], "attack_success_whole":
                 official[m]["attack_success_rate"]} for m in heads}
    if n == len(test["y"]):
        for r in rows:
            if r["severity"] == 0:
                check[r["model"]].update(accuracy_head=r["accuracy"], attack_success_head=r["attack_success_after"])
    env = jr.records.environment()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.platform()}, {cpu_name()}, no GPU"
    record = {"date": stamp, "environment": env, "machine": machine, "entry": args.entry, "methods": args.methods,
              "repair_samples": args.repair_samples, "test_samples": n, "seed": args.seed,
              "corruptions": {k: list(v) for k, v in jr.data.CORRUPTIONS.items()}, "modes": MODES,
              "hold_points": HOLD_POINTS, "trigger": {"size": trigger.size, "position": list(trigger.position),
                                                      "value": trigger.value, "image": "×".join(map(str, x.shape[1:3]))}, "repairs": repairs, "whole_network_check": check, "rows": rows,
              "total_s": time.perf_counter() - t0}
    return {"record": record, "markdown": backdoor_markdown(record),
            "plots": {f"{NAME}.png": lambda path: backdoor_plot(record, path)}}


def _cell(rows, model, kind, sev):
    return next(r for r in rows if r["model"] == model and r["corruption"] == kind and r["severity"] == sev)


def holds(r, mode) -> bool:
    """The trigger adds at most ``HOLD_POINTS`` points to what the corruption alone sends to the target."""
    return 100 * (r[f"attack_success_{mode}"] - r["target_rate_untriggered"]) <= HOLD_POINTS


def backdoor_markdown(rec) -> str:
    rows, kinds = rec["rows"], list(rec["corruptions"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    methods = [m for m in models if m != "unrepaired"]
    pct = lambda v: f"{100 * v:.2f}%"
    md = [f"## {rec['entry']}: does a backdoor repair hold on corrupted images?\n",
          f"Measured {rec['date']} on {rec['machine']} (shared with other jobs), jax {jax.__version__}; "
          f"`python experiments/cross_domain.py --data-dir DIR --sections mnist-backdoor` "
          f"({rec['total_s']:.0f} s for this section). Every method of `experiments/backdoor_images.py` "
          f"repairs the dense layers after `flatten` on {rec['repair_samples']} clean MNIST training images and "
          f"their triggered copies (no corrupted image is seen); the figures are on {rec['test_samples']} test "
          f"images, each corruption × severity cell drawn with its own key from seed {rec['seed']}.\n",
          "Corruptions (`jr.data.corrupt`, levels 1–5): " + "; ".join(
              f"{k} {', '.join(str(v) for v in lv)}" for k, lv in rec["corruptions"].items())
          + " (shift: pixels in one of 8 directions; rotate: ± degrees; noise: σ; blur: σ in pixels; contrast: "
          "factor).\n",
          "Two trigger modes: **after** = " + MODES["after"] + " (the patch is intact in the corner); **with** = "
          + MODES["with"] + " (the same shift/angle/noise as the clean copy: the patch moves, turns, blurs; "
          f"the trigger is a {rec['trigger']['size']}×{rec['trigger']['size']} patch of value {rec['trigger']['value']} "
          f"at row, column {tuple(rec['trigger']['position'])} of {rec['trigger']['image']} images, so a shift "
          "down or right pushes part of it out of the frame). "
          "Attack success counts triggered non-target test images sent to the target class; *target rate* is the "
          "same for the untriggered corrupted images. A repair **holds** in a cell when attack success exceeds "
          f"that target rate by at most {HOLD_POINTS} points (the trigger itself adds ≤ {HOLD_POINTS} points).\n"]
    md += ["### Clean test set\n", "| model | accuracy | attack success | time to repair (s) |", "|---|---|---|---|"]
    for m in models:
        r = _cell(rows, m, "none", 0)
        t = rec["repairs"].get(m, {}).get("time_s")
        md.append(f"| {m} | {pct(r['accuracy'])} | {pct(r['attack_success_after'])} | "
                  f"{'' if t is None else f'{t:.1f}'} |")
    md += ["", "### Worst cell per corruption (severities 1–5): highest attack success, after / with\n",
           "| model | " + " | ".join(kinds) + " | cells held (after) | cells held (with) |",
           "|---|" + "---|" * (len(kinds) + 2)]
    for m in models:
        cells = [r for r in rows if r["model"] == m and r["severity"] > 0]
        worst = [f"{pct(max(r['attack_success_after'] for r in cells if r['corruption'] == k))} / "
                 f"{pct(max(r['attack_success_with'] for r in cells if r['corruption'] == k))}" for k in kinds]
        md.append(f"| {m} | " + " | ".join(worst) + f" | {sum(holds(r, 'after') for r in cells)}/{len(cells)} | "
                  f"{sum(holds(r, 'with') for r in cells)}/{len(cells)} |")
    md += ["", "### Answer\n"]
    md += answer(rows, methods, kinds)
    md += ["", "### Every cell\n",
           "Accuracy on the corrupted images; attack success after / with; target rate without a trigger; "
           "✓ where the repair holds in both modes.\n",
           "| corruption | severity | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for k in ["none"] + kinds:
        for s in ([0] if k == "none" else range(1, 6)):
            cells = []
            for m in models:
                r = _cell(rows, m, k, s)
                mark = " ✓" if holds(r, "after") and holds(r, "with") else ""
                cells.append(f"{100 * r['accuracy']:.1f} · {100 * r['attack_success_after']:.2f}/"
                             f"{100 * r['attack_success_with']:.2f} · {100 * r['target_rate_untriggered']:.2f}{mark}")
            md.append(f"| {k} | {s} | " + " | ".join(cells) + " |")
    chk = rec["whole_network_check"]
    if all("accuracy_head" in c for c in chk.values()):
        worst = max(max(abs(c["accuracy_head"] - c["accuracy_whole"]), abs(c["attack_success_head"] -
                    c["attack_success_whole"])) for c in chk.values())
        md.append(f"\nCheck: the clean figures computed from the values at `flatten` differ from `jr.zoo.evaluate` "
                  f"on the whole repaired networks by at most {100 * worst:.2f} points.\n")
    return "\n".join(md) + "\n"


def answer(rows, methods, kinds) -> list[str]:
    """The measured answer to "does the repair hold under shift, and which methods keep it?"."""
    def held_up_to(m, k, mode):  # the highest severity s such that levels 1..s all hold
        s = 0
        while s < 5 and holds(_cell(rows, m, k, s + 1), mode):
            s += 1
        return s

    out = []
    clean_ok = [m for m in methods if holds(_cell(rows, m, "none", 0), "after")]
    out.append(f"- On the clean test set the repair holds for {len(clean_ok)}/{len(methods)} methods: "
               f"{', '.join(clean_ok) or 'none'}"
               + (f"; not for {', '.join(m for m in methods if m not in clean_ok)}." if len(clean_ok) < len(methods)
                  else "."))
    u = [r for r in rows if r["model"] == "unrepaired"]
    for k in ("shift", "rotate"):
        if k in kinds:
            a = [100 * _cell(u, "unrepaired", k, s)["attack_success_after"] for s in range(1, 6)]
            w = [100 * _cell(u, "unrepaired", k, s)["attack_success_with"] for s in range(1, 6)]
            out.append(f"- The unrepaired model's backdoor under {k} 1→5: {a[0]:.1f}% → {a[-1]:.1f}% (after), "
                       f"{w[0]:.1f}% → {w[-1]:.1f}% (with).")
    for k in kinds:
        full = [m for m in clean_ok if held_up_to(m, k, "after") == 5 and held_up_to(m, k, "with") == 5]
        part = {m: (held_up_to(m, k, "after"), held_up_to(m, k, "with")) for m in clean_ok if m not in full}
        txt = f"- **{k}**: holds at every level in both modes for {', '.join(full) or 'no method'}"
        if part:
            txt += "; up to level (after, with): " + ", ".join(f"{m} ({a}, {w})" for m, (a, w) in part.items())
        worst = max((r for r in rows if r["model"] in clean_ok and r["corruption"] == k),
                    key=lambda r: max(r["attack_success_after"], r["attack_success_with"]) - r["target_rate_untriggered"],
                    default=None)
        if worst is not None:
            txt += (f". Largest trigger effect among them: {worst['model']} at level {worst['severity']}, attack "
                    f"success {100 * worst['attack_success_after']:.2f}% after / {100 * worst['attack_success_with']:.2f}% "
                    f"with vs {100 * worst['target_rate_untriggered']:.2f}% untriggered")
        out.append(txt + ".")
    return out


def backdoor_plot(rec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, kinds = rec["rows"], list(rec["corruptions"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    what = [("attack_success_after", "attack success (%),\ntrigger stamped after"),
            ("attack_success_with", "attack success (%),\ntrigger corrupted with image"),
            ("accuracy", "clean accuracy (%)")]
    fig, axes = plt.subplots(len(what), len(kinds), figsize=(3.3 * len(kinds), 2.9 * len(what)), sharex=True,
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for j, k in enumerate(kinds):
        for i, (field, label) in enumerate(what):
            ax = axes[i][j]
            for c, m in enumerate(models):
                ys = [100 * _cell(rows, m, "none", 0)[field]] + [100 * _cell(rows, m, k, s)[field] for s in range(1, 6)]
                ax.plot(range(6), ys, marker="osD^v<>p"[c % 8], ms=4, lw=1.4 if m != "unrepaired" else 2.2,
                        color="k" if m == "unrepaired" else colours(c % 10), ls="--" if m == "unrepaired" else "-",
                        label=m)
            if field != "accuracy":
                ax.set_yscale("symlog", linthresh=1.0)
                ax.set_ylim(0, 130)
            else:
                ax.set_ylim(0, 101)
            ax.set_xticks(range(6))
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(k)
            if j == 0:
                ax.set_ylabel(label)
            if i == len(what) - 1:
                ax.set_xlabel("severity (0 = clean)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=9, frameon=False)
    fig.suptitle(f"{rec['entry']}: repaired on clean images, evaluated under corruption ({rec['test_samples']} test "
                 f"images per cell)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# spurious-patch


def spurious_patch(args) -> dict:
    """The spurious-correlation repairs (``experiments/spurious.py``) on a second, different spurious
    feature: the same palette colours in a 6×6 corner square on a black border, colour uniform at
    random. No method saw it. Read from ``spurious.json`` in ``--out`` (run ``experiments/spurious.py``
    first); the repaired networks are evaluated there on this shifted test set too."""
    src = Path(args.out) / "spurious.json"
    if not src.exists():
        raise ValueError(f"section spurious-patch reads {src}; run `python experiments/spurious.py --data-dir DIR "
                         f"--out {args.out}` first")
    res = json.loads(src.read_text())
    rows = res["rows"]
    base = rows[0]
    out = []
    for r in rows:
        gain_b = r["decorrelated_accuracy"] - base["decorrelated_accuracy"]
        gain_p = r["patch_accuracy"] - base["patch_accuracy"]
        out.append({"method": r["method"], "level": r["level"], "decorrelated_accuracy": r["decorrelated_accuracy"],
                    "patch_accuracy": r["patch_accuracy"], "border_gain_points": 100 * gain_b,
                    "patch_gain_points": 100 * gain_p, "spurious_ace": r["spurious_ace"], "patch_ace": r["patch_ace"],
                    "degenerate": r.get("degenerate")})
    md = [f"## spurious-patch: the border-colour repairs on a corner patch\n",
          f"From `experiments/results/spurious.json` ({res['date']}, {res['machine']}; regenerate it with "
          "`python experiments/spurious.py --data-dir DIR`, then this section with `--sections spurious-patch`). "
          "Model `fashion-spurious`; every method repaired the border only. The shifted test set: the 10,000 test "
          "images on a black border with a uniformly coloured 6×6 corner square. Gains are in points over the "
          "unrepaired model; patch ACE: the corner colour's ACE on the class it goes with (as the border's).\n",
          "| method | level | decorrelated acc. (border) | gain (pts) | corner-patch acc. | gain (pts) | border ACE | patch ACE |",
          "|---|---|---|---|---|---|---|---|"]
    for r in out:
        md.append(f"| {r['method']} | {r['level']} | {100 * r['decorrelated_accuracy']:.2f}% | {r['border_gain_points']:+.2f} | "
                  f"{100 * r['patch_accuracy']:.2f}% | {r['patch_gain_points']:+.2f} | {r['spurious_ace']:.3f} | "
                  f"{r['patch_ace']:.3f} |" + (f" degenerate: {r['degenerate']}" if r["degenerate"] else ""))
    helped = [r for r in out[1:] if r["border_gain_points"] > 1.0 and not r["degenerate"]]
    kept = [r for r in helped if r["patch_gain_points"] >= 0.5 * r["border_gain_points"]]
    md.append("")
    md.append(f"Methods that raised decorrelated accuracy by more than a point: {len(helped)} "
              f"({', '.join(r['method'] for r in helped) or 'none'}); of these, {len(kept)} kept at least half of that "
              f"gain on the corner patch ({', '.join(r['method'] for r in kept) or 'none'}). The unrepaired model's "
              f"patch ACE is {base['patch_ace']:.3f}: it does not read the colour in the corner, so the patch tests "
              "whether a repair keeps the shape-based accuracy it gained once the border it was repaired on is gone.\n")
    return {"record": {"date": res["date"], "source": str(src), "rows": out}, "markdown": "\n".join(md), "plots": {}}


SECTIONS = {"mnist-backdoor": mnist_backdoor, "spurious-patch": spurious_patch}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="where mnist/ etc. are (default $JAXREPAIR_DATA)")
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--entry", default="mnist-badnets", help="mnist-backdoor: the backdoor zoo entry")
    p.add_argument("--methods", nargs="*", default=BACKDOOR_METHODS, choices=backdoor_images.METHODS)
    p.add_argument("--repair-samples", type=int, default=1000)
    p.add_argument("--test-samples", type=int, default=None, help="test images per cell (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results")
    args = p.parse_args()
    if args.test_samples is not None and args.test_samples < 1:
        raise ValueError(f"--test-samples must be at least 1, got {args.test_samples}")
    if "mnist-backdoor" in args.sections:
        if jr.zoo.entry(args.entry).kind != "backdoor":
            raise ValueError(f"--entry {args.entry!r} is not a backdoor zoo entry")
        if jr.zoo.needs_data_dir(args.entry):  # checked before any work
            jr.data.check_files(jr.zoo.entry(args.entry).dataset, jr.data.data_dir(args.data_dir, need=args.entry))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = {name: SECTIONS[name](args) for name in args.sections}
    previous = json.loads((out / f"{NAME}.json").read_text()) if (out / f"{NAME}.json").exists() else {}
    sections = {name: previous["sections"][name] for name in SECTIONS
                if name not in done and name in previous.get("sections", {})}  # carried over, with their dates
    sections.update({name: {**d["record"], "markdown": d["markdown"]} for name, d in done.items()})
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    record = {"experiment": NAME, "date": stamp, "environment": jr.records.environment(),
              "sections_run": args.sections, "total_s": time.perf_counter() - t0,
              "sections": {name: sections[name] for name in SECTIONS if name in sections}}
    plots = {f: fn for d in done.values() for f, fn in d["plots"].items()}
    for name in [f"{NAME}.json", f"{NAME}.md", *plots]:
        if (out / name).exists():
            (out / name).rename(out / (name + ".previous"))
    (out / f"{NAME}.json").write_text(jr.records.dumps(record))
    for f, fn in plots.items():
        fn(out / f)
    md = [f"# Generalisation of a repair across domains\n",
          f"Written {stamp}; sections run now: {', '.join(args.sections)} ({record['total_s']:.0f} s); each "
          f"section states its own machine and date. Regenerate with `python experiments/cross_domain.py "
          f"--data-dir DIR` (all sections) or `--sections NAME`.\n"]
    md += [s["markdown"] for s in record["sections"].values()]
    (out / f"{NAME}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
