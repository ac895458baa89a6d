"""Sweeps: a grid of repairs from a TOML/YAML file, run as few compiled programs as possible, with
an append-only SQLite store that survives kills.

A config::

    store = "sweep.sqlite"            # default: next to the config, <config stem>.sqlite
    [grid]                            # the cartesian product of these lists is the set of cells
    entry = ["census-sex", "german-sex"]
    strategy = ["pso", "cma_es"]
    k = [5, 10]
    a = [0.2, 0.5]
    seed = [0, 1]
    [settings]                        # shared by every cell (optional)
    generations = 30
    population = 20
    repair_samples = 2000
    space = "factor"
    max_drop = 0.0075
    devices = 0                       # 0 or absent: all devices

Cells of one (entry, property, strategy) group — any ``k``, ``a`` and ``seed`` — run as **one** call of
one compiled program (:meth:`jaxrepair.repair.Problem.search` vmapped over the cells' selections,
keys and ``a``; ``k`` is data, padded to the group's largest). Every cell's
record — config hash, config, test metrics, timings per phase, library versions — is inserted with
its group in one SQLite transaction, so a killed sweep loses at most the group in flight and never
leaves a partial record; a restarted sweep skips the cells already stored. Only process 0 writes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

GRID_KEYS = ("entry", "property", "strategy", "k", "a", "seed")
SETTINGS = {"generations": None, "population": None, "repair_samples": 5000, "space": "factor", "max_drop": None,
            "bounds": None, "score": "interventional_change", "devices": 0}


def load_config(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sweep config")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError("YAML sweep configs need PyYAML (pip install pyyaml); TOML needs nothing") from None
        cfg = yaml.safe_load(text)
    else:
        import tomllib

        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from None
    if not isinstance(cfg, dict) or "grid" not in cfg:
        raise ValueError(f"{path}: a sweep config needs a [grid] table")
    grid = cfg["grid"]
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown grid key(s) {unknown}; allowed: {list(GRID_KEYS)}")
    if "entry" not in grid:
        raise ValueError(f"{path}: the grid needs at least 'entry'")
    settings = dict(SETTINGS)
    bad = sorted(set(cfg.get("settings", {})) - set(SETTINGS))
    if bad:
        raise ValueError(f"{path}: unknown setting(s) {bad}; allowed: {sorted(SETTINGS)}")
    settings.update(cfg.get("settings", {}))
    from jaxrepair import zoo

    entries = _as_list(grid["entry"])
    missing = [e for e in entries if e not in zoo.ENTRIES]
    if missing:
        raise ValueError(f"{path}: unknown zoo entries {missing}; known: {sorted(zoo.ENTRIES)}")
    store = Path(cfg.get("store") or path.with_suffix(".sqlite").name)
    if not store.is_absolute():
        store = path.parent / store
    return {"grid": {k: _as_list(grid.get(k, d)) for k, d in
                     (("entry", None), ("property", "default"), ("strategy", "pso"), ("k", 0), ("a", -1.0), ("seed", 0))},
            "settings": settings, "store": store, "path": str(path)}


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def cells(cfg: dict) -> list[dict]:
    g = cfg["grid"]
    return [dict(zip(GRID_KEYS, combo)) for combo in itertools.product(*(g[k] for k in GRID_KEYS))]


def cell_hash(cell: dict, settings: dict) -> str:
    body = json.dumps({"cell": cell, "settings": {k: v for k, v in settings.items() if k != "devices"}}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- the store


class Store:
    """Append-only SQLite store of cell records."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS cells (hash TEXT PRIMARY KEY, config TEXT NOT NULL, metrics TEXT NOT NULL,"
                        " timings TEXT NOT NULL, versions TEXT NOT NULL, created REAL NOT NULL)")
        self.db.commit()

    def done(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT hash FROM cells")}

    def add(self, records: list[dict]) -> None:
        """All records of one group in one transaction (all or nothing)."""
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?)",
                [(r["hash"], json.dumps(r["config"]), json.dumps(r["metrics"]), json.dumps(r["timings"]),
                  json.dumps(r["versions"]), r["created"]) for r in records])

    def records(self) -> list[dict]:
        rows = self.db.execute("SELECT hash, config, metrics, timings, versions, created FROM cells ORDER BY created, hash")
        return [{"hash": h, "config": json.loads(c), "metrics": json.loads(m), "timings": json.loads(t),
                 "versions": json.loads(v), "created": cr} for h, c, m, t, v, cr in rows]

    def close(self):
        self.db.close()


# ----------------------------------------------------------------------------------- running


def _group_key(cell):
    return (cell["entry"], cell["property"], cell["strategy"])


def run(config_path, *, progress: bool = True) -> dict:
    """Runs every cell of the config that the store does not hold yet; returns a summary."""
    from jaxrepair import distributed, records, repair, zoo

    cfg = load_config(config_path)
    st = cfg["settings"]
    store = Store(cfg["store"]) if distributed.is_main() else None
    done = store.done() if store is not None else set()
    if jax.process_count() > 1:  # every process must skip the same cells: process 0's view, broadcast
        from jax.experimental import multihost_utils

        n = int(multihost_utils.broadcast_one_to_all(np.int32(len(done))))
        codes = np.zeros((n, 16), np.uint8)
        if store is not None and n:
            codes[:] = np.frombuffer("".join(sorted(done)).encode(), np.uint8).reshape(n, 16)
        codes = np.asarray(multihost_utils.broadcast_one_to_all(codes)) if n else codes
        done = {bytes(row).decode() for row in codes}
    todo = [c for c in cells(cfg) if cell_hash(c, st) not in done]
    groups: dict = {}
    for c in todo:
        groups.setdefault(_group_key(c), []).append(c)
    versions = records.environment()["versions"]
    devices = None if not st["devices"] else int(st["devices"])
    t_all = time.perf_counter()
    if progress:
        print(f"[sweep] {len(cells(cfg))} cells, {len(done)} already stored, {len(todo)} to run in {len(groups)} "
              f"compiled group(s)", file=sys.stderr, flush=True)
    locs = {}
    for gi, ((entry, prop, strat_name), members) in enumerate(groups.items()):
        t0 = time.perf_counter()
        bench = zoo.load(entry)
        if prop not in ("default", bench.entry.kind):
            raise ValueError(f"{entry} is a {bench.entry.kind} benchmark; property {prop!r} does not apply")
        task = repair.from_zoo(bench, repair_samples=st["repair_samples"], seed=0)
        preset = repair.preset_for(task.kind)
        cands = repair.candidate_sites(bench.model, st["space"], preset.site_kind)
        if (entry, prop) not in locs:
            locs[(entry, prop)] = repair.localize(bench.model, task, sites=cands, devices=devices)
        ranking = [n for n in locs[(entry, prop)].ranking(st["score"]) if n.site in cands]
        t_loc = time.perf_counter() - t0
        ks = [int(c["k"]) or preset.k for c in members]
        if max(ks) > len(ranking):
            raise ValueError(f"{entry}: k={max(ks)} but the candidate sites hold only {len(ranking)} units")
        bounds = st["bounds"] if st["bounds"] is not None else (preset.bounds if st["space"] == "factor" else None)
        strat = repair.get_strategy(strat_name, generations=st["generations"], population_size=st["population"])
        problem = repair.prepare(bench.model, task, ranking[: max(ks)], space=st["space"], sites=cands, k_max=max(ks),
                                 strategy=strat, bounds=tuple(bounds) if isinstance(bounds, list) else bounds,
                                 init=preset.init, devices=devices)
        a_vals = [float(c["a"]) if float(c["a"]) >= 0 else preset.a for c in members]
        t1 = time.perf_counter()
        out = problem.search(seeds=[int(c["seed"]) for c in members], a=a_vals, max_drop=st["max_drop"],
                             selections=[ranking[:k] for k in ks])
        t_search = time.perf_counter() - t1
        t2 = time.perf_counter()
        before = task.report(bench.model)
        recs = []
        for i, c in enumerate(members):
            after = task.report(problem.model_for(out, i))
            metrics = {"violation_before": before["violation"], "violation_after": after["violation"],
                       "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
                       "select_fitness": float(out["select_fitness"][i]), "generations_run": int(out["generations_run"][i]),
                       "selected": [(n.site, n.unit) for n in ranking[: ks[i]]]}
            if "drawdown" in after:
                metrics["drawdown"] = after["drawdown"]
            recs.append({"hash": cell_hash(c, st), "config": {**c, "a_used": a_vals[i], "k_used": ks[i], **st},
                         "metrics": metrics, "versions": versions, "created": time.time(),
                         "timings": {"localize_s": t_loc, "search_s": t_search / len(members), "group_search_s": t_search}})
        t_rep = time.perf_counter() - t2
        for r in recs:
            r["timings"]["report_s"] = t_rep / len(members)
        if store is not None:
            store.add(recs)
        if progress:
            print(f"[sweep] group {gi + 1}/{len(groups)} {entry} {strat_name} k={sorted(set(ks))}: {len(members)} cells in one program "
                  f"(search {t_search:.1f}s), stored", file=sys.stderr, flush=True)
    n = len(store.done()) if store is not None else None
    if store is not None:
        store.close()
    return {"store": str(cfg["store"]), "ran": len(todo), "skipped": len(done), "stored": n,
            "wall_s": time.perf_counter() - t_all}


# ----------------------------------------------------------------------------------- reporting


def report(store_path, out_dir=None) -> dict:
    """Markdown table and plots (violation vs accuracy per strategy, runtime per phase) of a store."""
    from jaxrepair import records

    path = Path(store_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sweep store")
    st = Store(path)
    recs = st.records()
    st.close()
    rows = []
    for r in sorted(recs, key=lambda r: tuple(str(r["config"][k]) for k in GRID_KEYS)):
        c, m = r["config"], r["metrics"]
        red = 1 - m["violation_after"] / m["violation_before"] if m["violation_before"] > 0 else None
        rows.append((c["entry"], c["strategy"], c["k_used"], c["a_used"], c["seed"], m["violation_before"], m["violation_after"],
                     "n/a" if red is None else f"{100 * red:.1f}%", f"{100 * (m['accuracy_before'] - m['accuracy_after']):.2f}",
                     f"{r['timings']['search_s']:.2f}"))
    table = records.markdown_table(["entry", "strategy", "k", "a", "seed", "violation before", "violation after", "reduction",
                                    "accuracy drop (pts)", "search s/cell"], rows)
    out = Path(out_dir) if out_dir else path.with_suffix("")
    out.mkdir(parents=True, exist_ok=True)
    md = f"# Sweep {path.name}\n\n{len(recs)} cells.\n\n{table}"
    files = {"markdown": str(records.write_text(_fresh(out / "report.md"), md))}
    plt = records.pyplot()
    if plt is not None and recs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for s in sorted({r["config"]["strategy"] for r in recs}):
            mine = [r for r in recs if r["config"]["strategy"] == s]
            ax.scatter([r["metrics"]["accuracy_after"] for r in mine], [r["metrics"]["violation_after"] for r in mine], label=s, s=18)
        ax.set_xlabel("test accuracy after repair")
        ax.set_ylabel("violation after repair")
        ax.legend(title="strategy")
        files["tradeoff_plot"] = str(records.save_figure(fig, _fresh(out / "violation_vs_accuracy.png")))
        fig, ax = plt.subplots(figsize=(6, 4))
        strategies = sorted({r["config"]["strategy"] for r in recs})
        bottom = np.zeros(len(strategies))
        for phase in ("localize_s", "search_s", "report_s"):
            vals = np.array([np.mean([r["timings"].get(phase, 0.0) for r in recs if r["config"]["strategy"] == s]) for s in strategies])
            ax.bar(strategies, vals, bottom=bottom, label=phase.replace("_s", ""))
            bottom += vals
        ax.set_ylabel("seconds per cell (mean)")
        ax.legend(title="phase")
        files["runtime_plot"] = str(records.save_figure(fig, _fresh(out / "runtime_per_phase.png")))
    return {"cells": len(recs), "table": table, "files": files}


def _fresh(path: Path) -> Path:
    """``path``, or ``name-1.ext``, ``name-2.ext``... if it exists (reports never overwrite)."""
    n = 1
    cand = path
    while cand.exists():
        cand = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return cand


__all__ = ["Store", "cell_hash", "cells", "load_config", "report", "run"]
