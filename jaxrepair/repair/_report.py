"""Repair outputs: the repaired model (next to, never over, the input), JSON, markdown, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxrepair import convert, models, records


def plot_history(result, path) -> Path | None:
    """Best (repair split), generation mean and selected (select split) fitness per generation."""
    plt = records.pyplot()
    h = result.search.get("history") or {}
    if plt is None or "best" not in h:
        return None
    g = np.arange(1, len(h["best"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(g, h["best"], label="best so far (repair split)")
    ax.plot(g, h["mean"], label="generation mean (repair split)", alpha=0.6)
    ax.plot(g, h["select"], label="selected (select split)", ls="--")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness  (1−a)·violation + a·(1−accuracy)")
    ax.set_title(f"{result.task}: {result.method}", fontsize=9)
    ax.legend(fontsize=7)
    return records.save_figure(fig, path)


def plot_pareto(front: dict, path) -> Path | None:
    plt = records.pyplot()
    if plt is None:
        return None
    pts = front["points"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([p["test_violation"] for p in pts], [p["test_accuracy"] for p in pts], c="0.6", label="all (a, seed)")
    f = sorted((pts[i] for i in front["front"]), key=lambda p: p["test_violation"])
    ax.plot([p["test_violation"] for p in f], [p["test_accuracy"] for p in f], "o-", c="C3", label="non-dominated (select split)")
    for p in f:
        ax.annotate(f"a={p['a']:g}", (p["test_violation"], p["test_accuracy"]), fontsize=7)
    b = front["before_test"]
    ax.scatter([b["violation"]], [b["accuracy"]], marker="*", s=120, c="k", label="before repair")
    ax.set_xlabel("violation rate (test)")
    ax.set_ylabel("accuracy (test)")
    ax.set_title(f"{front['task']}: accuracy / violation trade-off", fontsize=9)
    ax.legend(fontsize=7)
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
        s = records.plot_scores(result.localization, out / "scores.png", score=result.config.get("score", "interventional_change"))
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
    records.write_text(out / "pareto.md", f"# Pareto front: {front['task']}\n\n{md}")
    p = plot_pareto(front, out / "pareto.png")
    return {"json": str(out / "pareto.json"), "markdown": str(out / "pareto.md"), "plot": str(p) if p else None}
