"""Repair outputs: the repaired model (next to, never over, the input), JSON, markdown, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxrepair import causal, convert, models, records


def _plain_log_ticks(ax) -> None:
    """Log-axis ticks as plain numbers (0.15, not 1.5×10⁻¹)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot_history(result, path) -> Path | None:
    """The search's progress: for a population search, fitness per generation — best so far (repair
    split) and the solution chosen so far (select split) on top, the generation's mean fitness with
    the budget penalties below (log scale: one candidate over the budget dwarfs the rest) — drawn up
    to the generation it stopped at; for fine-tuning, the training loss and the select fitness per
    evaluation."""
    plt = records.pyplot()
    h = result.search.get("history") or {}
    if plt is None or not ("best" in h or ("loss" in h and "select" in h)):
        return None
    from matplotlib.ticker import MaxNLocator

    if "best" not in h:  # fine-tuning: loss and select fitness per evaluation
        loss, select = np.asarray(h["loss"], float), np.asarray(h["select"], float)
        steps = int(result.config.get("steps", len(loss)))
        x = np.linspace(steps / len(loss), steps, len(loss))
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5), sharex=True, gridspec_kw={"height_ratios": [1, 1]})
        top.plot(x, select, marker=".", label="select-split fitness, budget penalty included (the best is kept)")
        top.set_ylabel("fitness (select split)")
        top.legend(fontsize=7)
        bottom.plot(x, loss, color="C1")
        bottom.set_ylabel("training loss\n(repair split)")
        bottom.set_xlabel("step")
        top.set_title(f"{result.task}: {result.method} — fine-tuning", fontsize=9)
        return records.save_figure(fig, path)
    best, select, mean = (np.asarray(h[k], float) for k in ("best", "select", "mean"))
    ran = int(result.search.get("generations_run", len(best)))
    limit = len(best)
    g = np.arange(1, ran + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5.2), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.plot(g, best[:ran], label="best so far (repair split)")
    top.plot(g, select[:ran], ls="--", label="chosen so far (select split)")
    top.axhline(result.search.get("identity_select_fitness", np.nan), color="0.5", lw=0.8, ls=":",
                label="unrepaired model (select split)")
    top.set_ylabel("fitness")
    stop = f"stopped early at generation {ran} of {limit} (no gain)" if ran < limit else f"all {limit} generations"
    top.legend(fontsize=7, title=stop, title_fontsize=7)
    m = mean[:ran]
    bottom.plot(g, np.where(m > 0, m, np.nan), color="C1", alpha=0.8)
    bottom.set_yscale("log")
    if np.any(m > 0):
        _plain_log_ticks(bottom)
    bottom.set_ylabel("population mean\n(penalties included)", fontsize=8)
    bottom.set_xlabel("generation")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlim(0.5, ran + 0.5)
    top.set_title(f"{result.task}: {result.method} — fitness (1−a)·violation + a·(1−accuracy)", fontsize=9)
    fig.text(0.01, 0.005, "lower is better; the mean includes each over-budget candidate's penalty, so it sits "
             "far above the best", fontsize=6.5, color="0.35")
    return records.save_figure(fig, path)


def plot_pareto(front: dict, path) -> Path | None:
    """Every (a, seed) run on the test split, the non-dominated ones (chosen on the select split)
    joined, the unrepaired model as a hollow star under them; runs that land on the same point are
    drawn once, larger, with their count and a values."""
    plt = records.pyplot()
    if plt is None:
        return None
    pts = front["points"]
    groups: dict = {}
    for i, p in enumerate(pts):
        groups.setdefault((round(p["test_violation"], 6), round(p["test_accuracy"], 6)), []).append(i)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    b = front["before_test"]
    ax.scatter([b["violation"]], [b["accuracy"]], marker="*", s=260, facecolors="none", edgecolors="k", linewidths=1.2,
               zorder=1, label="before repair")
    on_front = set(front["front"])
    for (v, acc), idx in groups.items():
        chosen = any(i in on_front for i in idx)
        ax.scatter([v], [acc], s=30 + 25 * (len(idx) - 1), c="C3" if chosen else "0.55", alpha=0.85, zorder=3,
                   edgecolors="white", linewidths=0.5)
        a_vals = sorted({pts[i]["a"] for i in idx if np.isfinite(pts[i]["a"])})  # NSGA's points have no a
        text = ("a=" + ",".join(f"{a:g}" for a in a_vals) if a_vals else "") + (f" (×{len(idx)})" if len(idx) > 1 else "")
        if text:
            ax.annotate(text, (v, acc), xytext=(4, 4), textcoords="offset points", fontsize=7, zorder=4)
    f = sorted((pts[i] for i in front["front"]), key=lambda p: p["test_violation"])
    ax.plot([p["test_violation"] for p in f], [p["test_accuracy"] for p in f], "-", c="C3", lw=1, zorder=2,
            label="non-dominated (chosen on the select split)")
    ax.scatter([], [], c="0.55", s=30, label="other runs (a, seed)")
    ax.set_xlabel("violation rate (test)")
    ax.set_ylabel("accuracy (test)")
    ax.margins(0.12)
    hv = f", hypervolume share {front['hypervolume_share']:.3f}" if "hypervolume_share" in front else ""
    ax.set_title(f"{front['task']} ({front.get('method', 'plan')}): {len(pts)} points{hv}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return records.save_figure(fig, path)


def write_result(result, out_dir, *, model_path=None, extra: dict | None = None) -> dict:
    """Writes ``repair.json``, ``repair.md``, plots and the repaired model into ``out_dir`` (a new
    directory), and the model also next to ``model_path`` when given (``<stem>.repaired[-n].npz``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    rec = {**result.to_json(), "environment": records.environment(), **(extra or {})}
    files["model"] = str(models.save(result.model, out / "repaired.npz"))
    if model_path is not None:
        p = Path(model_path)
        stem = p.name[: -len(".nnet.xz")] if p.name.lower().endswith(".nnet.xz") else p.stem
        fmt = convert.source_format(p)
        suffix = convert.EXPORTS.get(fmt)
        for n in range(1000):
            tag = f"{stem}.repaired{'-' + str(n) if n else ''}"
            cand, back = p.with_name(f"{tag}.npz"), p.with_name(f"{tag}{suffix}") if suffix else None
            if not cand.exists() and (back is None or not back.exists()):
                files["model_next_to_input"] = str(models.save(result.model, cand))
                if back is not None:
                    try:
                        files["model_exported"] = str(convert.export_like(result.model, p, back))
                    except (ValueError, ImportError) as e:  # e.g. a repair that left the .nnet layer chain
                        files["export_skipped"] = f"{fmt}: {e}"
                break
    if result.localization is not None:
        records.write_json(out / "localization.json", result.localization.to_json())
        score = (result.localization.score if isinstance(result.localization, causal.AdaptiveLocalization)
                 else result.config.get("score", "interventional_change"))  # an adaptive ranking has its own score
        s = records.plot_scores(result.localization, out / "scores.png", score=score)
        if s:
            files["scores_plot"] = str(s)
    h = plot_history(result, out / "fitness.png")
    if h:
        files["fitness_plot"] = str(h)
    rec["files"] = files
    records.write_json(out / "repair.json", rec)
    sel = ", ".join(f"{n.site}[{n.unit}]" for n in result.selected)
    md = f"# Repair of {result.task} ({result.method})\n\nSelected neurons: {sel or '-'}\n\n{result.table()}"
    records.write_text(out / "repair.md", md)
    files["json"], files["markdown"] = str(out / "repair.json"), str(out / "repair.md")
    return files


def write_pareto(front: dict, out_dir) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / "pareto.json", {**front, "environment": records.environment()})
    rows = [[p["a"], p["seed"], p["select_violation"], p["select_accuracy"], p["test_violation"], p["test_accuracy"],
             "yes" if i in front["front"] else ""] for i, p in enumerate(front["points"])]
    md = records.markdown_table(["a", "seed", "violation (select)", "accuracy (select)", "violation (test)",
                                 "accuracy (test)", "non-dominated"], rows)
    summary = ""
    if "hypervolume" in front:
        ref = front["reference"]
        summary = (f"Hypervolume (test, violation × accuracy loss, reference ({ref[0]:.4g}, {ref[1]:.4g})): "
                   f"{front['hypervolume']:.6g}, a share {front['hypervolume_share']:.4f} of the reference box.\n\n")
        if front.get("chosen_test"):
            c = front["chosen_test"]
            summary += (f"Chosen on the select split (lowest violation within the budget): test violation "
                        f"{c['violation']:.4f}, accuracy {c['accuracy']:.4f}.\n\n")
    records.write_text(out / "pareto.md", f"# Pareto front: {front['task']} ({front.get('method', 'plan')})\n\n{summary}{md}")
    p = plot_pareto(front, out / "pareto.png")
    return {"json": str(out / "pareto.json"), "markdown": str(out / "pareto.md"), "plot": str(p) if p else None}
