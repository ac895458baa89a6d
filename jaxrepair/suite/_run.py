"""``jr.suite.run``: every entry of a benchmark family × every applicable registered method × seeds.

Each cell (entry, method, seed) runs ``jr.repair.METHODS[method](model, task, seed=seed)`` on the
entry's repair task for that seed, and stores the per-row test outcomes of the model before and
after (violation per property row, correctness per accuracy row) with the headline figures in the
sweeps' append-only SQLite :class:`~jaxrepair.sweep.Store` — one record per cell, written as soon as
the cell ends, so a killed run keeps every finished cell and a rerun does no work twice. The report
(:mod:`jaxrepair.suite._report`) computes every statistic from those rows.

Splits: an entry whose test split has fewer than :data:`SMALL_TEST` rows (German, COMPAS) is
re-split for every seed — its validation and test rows pooled and split again into select and test
of the same sizes, stratified by label (and sensitive value for fairness) — so its figures average
over several test sets; the model never saw any of those rows (it was trained on the train split).
Larger entries keep the zoo's split; a seed then changes the repair subsample and the method's own
randomness. Every choice a method makes (checkpoint, ``k``, budget) is made on the select split.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from jaxrepair.records import Progress
from jaxrepair.suite._acasxu import machine

#: Bumped when a cell's meaning changes: a store written by another version is refused.
SUITE_VERSION = 1
#: Entries whose test split has fewer rows are re-split per seed.
SMALL_TEST = 2000


@dataclasses.dataclass(frozen=True)
class Family:
    """A benchmark family: its zoo entries (all of one task kind) and the published figures beside it."""

    name: str
    kind: str
    entries: tuple
    needs_data: bool  # image sets: read from --data-dir
    anchors: tuple  # ({"tool", "figure", "value", "source"}, ...)
    goal: str
    #: Image families repair the layers after this site (``jr.repair.lower``: the frozen layers
    #: before it are run once, every method then works on the head), as their experiments do.
    cut: str | None = None
    #: ``((entry, site), ...)``: entries cut elsewhere (a ViT has no ``flatten``: its head starts after
    #: the first block's residual stream).
    cuts: tuple = ()
    #: Training rows (images: clean images, each with its triggered copy) a repair sees by default.
    repair_samples: int = 5000
    #: ``meets(row) -> bool``: whether a method's leaderboard row (means and intervals over seeds)
    #: meets the family's ``goal``; degenerate seeds fail it whatever this says.
    meets: Callable | None = None

    def cut_for(self, entry: str) -> str | None:
        """The site an entry's repairs cut the network at (None: the whole network)."""
        return dict(self.cuts).get(entry, self.cut)


def _fairness_goal(r) -> bool:
    return (r["violation_reduction"] >= 0.90 and r["ci95"]["accuracy_change_points"][1] >= 0
            and r["accuracy_change_points"] >= -0.5)


def _backdoor_goal(r) -> bool:
    return r["violation_after"] <= 0.005 and r["accuracy_change_points"] >= -0.5


def _spurious_goal(r) -> bool:
    return (r["p_violation_change"] < 0.05 and r["violation_change"] < 0 and r["accuracy_change_points"] > 0
            and r["p_accuracy_change"] < 0.05)


def _safety_goal(r) -> bool:
    return r["violation_after"] == 0 and (r["drawdown_mean"] is None or r["drawdown_mean"] < 0.02)


def _entries(kind: str, only=None) -> tuple:
    from jaxrepair import zoo

    return tuple(n for n, e in zoo.ENTRIES.items() if e.kind == kind and (only is None or n in only))


_VERE_ACAS = ("VeRe (Ma et al., ICSE 2024), its 36 ACAS Xu tasks (these are 5 of the zoo's; the drawdown of VeRe's "
              "tables is measured on its own samples), as the ACAS Xu suite quotes it")
_VERE = "VeRe (Ma et al., ICSE 2024), Table 3, 4-set average (MNIST, Fashion, CIFAR-10, GTSRB); GPU; its own models"


def families() -> dict:
    """The families ``jaxrepair suite`` runs (``acasxu``, VeRe's certified-repair task list, is
    :func:`jaxrepair.suite.acasxu`)."""
    care = "Sun et al., CARE, ICSE 2022 (arXiv:2204.09274), abstract; its own census/bank/german models"
    return {
        "fairness": Family("fairness", "fairness", _entries("fairness"), False,
                           ({"tool": "CARE", "figure": "mean violation reduction", "value": 0.619, "source": care},),
                           "on every entry some non-degenerate method reduces the violation by >= 90% with an accuracy "
                           "change whose 95% interval includes zero or is positive and whose point estimate loses "
                           "<= 0.5 points", meets=_fairness_goal),
        "backdoor": Family("backdoor", "backdoor", ("mnist-badnets", "fashion-badnets", "gtsrb-badnets", "mnist-vit-badnets",
                                                    "fashion-vit-badnets", "tokens-gpt-badnets"), True,
                           ({"tool": "VeRe", "figure": "attack success", "value": 1 - 0.9989, "source": _VERE},
                            {"tool": "CARE", "figure": "attack success", "value": 1 - 0.9972, "source": _VERE}),
                           "attack success <= 0.5% with <= 0.5 points lost on every entry", cut="flatten",
                           repair_samples=1000, meets=_backdoor_goal,
                           cuts=(("mnist-vit-badnets", "blk1"), ("fashion-vit-badnets", "blk1"), ("tokens-gpt-badnets", "blk1"))),
        "spurious": Family("spurious", "spurious", _entries("spurious"), True, (),
                           "the decorrelated accuracy rises and the invariance violation falls, both significantly", cut="s4b1",
                           meets=_spurious_goal),
        "safety": Family("safety", "safety", _entries("safety"), False,
                         ({"tool": "VeRe", "figure": "drawdown", "value": 0.1526, "source": _VERE_ACAS},
                          {"tool": "CARE", "figure": "drawdown", "value": 0.1953, "source": _VERE_ACAS},
                          {"tool": "PRDNN", "figure": "drawdown", "value": 0.1948, "source": _VERE_ACAS}),
                         "the sampled violation rate reaches 0 with a drawdown below 2%", meets=_safety_goal),
    }


# --------------------------------------------------------------------------- splits and outcomes


def resplit(bench, seed: int):
    """``bench`` with its validation and test rows pooled and split again (same sizes), stratified by
    label and — for fairness entries — the sensitive attribute's value; seeded."""
    val, test = bench.splits["val"], bench.splits["test"]
    x = np.concatenate([np.asarray(val["x"]), np.asarray(test["x"])])
    y = np.concatenate([np.asarray(val["y"]), np.asarray(test["y"])])
    strata = y.astype(np.int64)
    if bench.entry.kind == "fairness":
        col = bench.prop.column
        _, s = np.unique(x[:, col], return_inverse=True)
        strata = strata * (int(s.max()) + 1) + s
    rng = np.random.default_rng(1_000_003 + int(seed))
    share = len(test["y"]) / len(y)
    test_idx = []
    for g in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == g))
        test_idx.append(rows[: int(round(share * len(rows)))])
    in_test = np.zeros(len(y), bool)
    in_test[np.concatenate(test_idx)] = True
    splits = {**bench.splits, "val": {"x": x[~in_test], "y": y[~in_test]}, "test": {"x": x[in_test], "y": y[in_test]}}
    return dataclasses.replace(bench, splits=splits)


def _pack(a) -> dict:
    a = np.asarray(a)
    if np.all((a == 0) | (a == 1)):
        return {"n": int(a.size), "bits": base64.b64encode(np.packbits(a.astype(bool))).decode()}
    return {"n": int(a.size), "values": a.astype(float).tolist()}


def unpack(d: dict) -> np.ndarray:
    """A row vector stored by the suite."""
    if "bits" in d:
        return np.unpackbits(np.frombuffer(base64.b64decode(d["bits"]), np.uint8))[: d["n"]].astype(np.float64)
    return np.asarray(d["values"], np.float64)


def outcomes(task, model) -> dict:
    """Per-row test outcomes of ``model``: ``v`` (property violated, per property row), ``w`` (the row
    counts in the rate: BadNets counts only images not of the target class) and ``c`` (prediction
    correct, per accuracy row). ``sum(v·w)/sum(w)`` is the task's test violation rate."""
    from jaxrepair import models, properties

    apply, params = models.functional(model)
    test = task.data["test"]
    prop = task.objective.prop
    v = np.asarray(properties.violations(prop, apply, params, test["property"]), np.float64)
    w = (np.asarray(prop.eligible(test["property"]), np.float64) if isinstance(prop, properties.AttackSuccess)
         else np.ones_like(v))
    acc = test["accuracy"]
    c = (np.asarray(properties.predict(apply, params, acc["x"], task.objective.decide)) == np.asarray(acc["y"]))
    return {"v": v, "w": w, "c": c.astype(np.float64)}


# --------------------------------------------------------------------------- cells and the store


def cell_config(family: str, entry: str, method: str, seed: int, settings: dict) -> dict:
    return {"suite": family, "suite_version": SUITE_VERSION, "entry": entry, "method": method, "seed": int(seed),
            "settings": settings}


def cell_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def check_store(store, family: str) -> None:
    """Refuses a store holding cells of another suite or another suite version (before any work)."""
    for r in store.records():
        c = r["config"]
        if c.get("suite") != family or c.get("suite_version") != SUITE_VERSION:
            raise ValueError(f"{store.path}: this store holds cells of suite {c.get('suite')!r} version "
                             f"{c.get('suite_version')!r}; suite {family!r} version {SUITE_VERSION} needs its own "
                             f"(choose another --out)")


#: Set by the suite itself for every cell, never by a user's ``options``.
RESERVED_OPTIONS = ("seed", "localization")


def check_run(family: str, *, methods=None, seeds=5, entries=None, data_dir=None, options=None,
              repair_samples=None) -> tuple:
    """Every argument of :func:`run` checked before work: ``(Family, entries, methods, seeds)``
    (entries and methods in the order given, each once)."""
    from jaxrepair import repair

    fams = families()
    if family not in fams:
        raise ValueError(f"unknown suite family {family!r}; choose one of {sorted(fams) + ['acasxu']}")
    fam = fams[family]
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer (the number of seeds, 0..N-1), got {seeds!r}")
    if entries:
        bad = [e for e in entries if e not in fam.entries]
        if bad:
            raise ValueError(f"entries {bad} are not in the {family} family; it has {list(fam.entries)}")
    chosen = list(dict.fromkeys(entries or fam.entries))
    if not chosen:
        raise ValueError(f"the {family} family has no entries")
    names = list(dict.fromkeys(methods)) if methods else repair.methods_for(fam.kind)
    for m in names:
        method = repair.get_method(m)  # unknown names: a clear error
        if fam.kind not in method.kinds:
            raise ValueError(f"method {m!r} does not apply to {family} ({fam.kind}) tasks; it applies to "
                             f"{', '.join(method.kinds)}. Methods for {fam.kind}: {', '.join(repair.methods_for(fam.kind))}")
    for m, opts in (options or {}).items():
        if m not in names:
            raise ValueError(f"options given for {m!r}, which this run does not include")
        reserved = sorted(set(opts) & set(RESERVED_OPTIONS))
        if reserved:
            raise ValueError(f"option(s) {reserved} of {m!r} are the suite's own (each cell's seed, the shared "
                             f"localisation); they cannot be set")
        unknown = sorted(set(opts) - set(repair.get_method(m).options))
        if unknown:
            raise ValueError(f"method {m!r} takes no option(s) {unknown}; it takes {sorted(repair.get_method(m).options)}")
        try:
            json.dumps(opts, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"options of {m!r} must be plain JSON values (numbers, strings, lists): {e}") from None
    if repair_samples is not None and (isinstance(repair_samples, bool) or
                                       not isinstance(repair_samples, (int, np.integer)) or repair_samples < 1):
        raise ValueError(f"repair_samples must be a positive integer, got {repair_samples!r}")
    if fam.needs_data and data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"--data-dir {data_dir}: no such directory")
    return fam, chosen, names, int(seeds)


def run(family: str, out_dir=".", *, methods=None, seeds: int = 5, entries=None, data_dir=None, options=None,
        repair_samples: int | None = None, progress: bool = True, report: bool = True, note: str = "",
        ray: bool = False, ray_address: str | None = None) -> dict:
    """Runs (or resumes) the ``family`` suite into ``out_dir``: ``suite_{family}.sqlite`` (the cells),
    and — with ``report`` — ``suite_{family}.{json,md,png}`` (:func:`jaxrepair.suite.report`).

    Args:
      family: ``fairness``, ``backdoor``, ``spurious`` or ``safety`` (:func:`families`).
      methods: registry names (default: every method that applies to the family's kind).
      seeds: seeds 0..seeds-1 for every (entry, method).
      entries: a subset of the family's entries.
      options: ``{method: {option: value}}`` overrides (recorded, part of the cell's identity).
      repair_samples: rows of the train split the repair sees (default: the family's, 5000; backdoor:
        1000 clean images and their triggered copies, as ``experiments/backdoor_images.py``).
      note: a paragraph for the report (how the run was made).
      ray, ray_address: each (entry, seed) is a Ray task (its methods share the localisation), on the
        cluster at ``ray_address`` (None: a local Ray instance); only this process writes the store.
    """
    from jaxrepair import records, zoo
    from jaxrepair.sweep import Store

    fam, chosen, names, n_seeds = check_run(family, methods=methods, seeds=seeds, entries=entries, data_dir=data_dir,
                                            options=options, repair_samples=repair_samples)
    options = options or {}
    ray = ray or bool(ray_address)  # an address means a Ray run
    if ray:
        from jaxrepair.sweep import ray_module

        ray_module()  # a missing extra is reported before the store is touched
    repair_samples = fam.repair_samples if repair_samples is None else int(repair_samples)
    out = records.check_output_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"suite_{family}.sqlite"
    if path.exists():  # checked read-only first: a store this run must refuse is left exactly as it was
        seen = Store(path, readonly=True)
        try:
            check_store(seen, family)
        finally:
            seen.close()
    versions = records.environment()["versions"]
    cpu = machine()
    configs = {(e, m, s): cell_config(family, e, m, s, {"repair_samples": repair_samples, "options": options.get(m, {}),
                                                        **({"cut": fam.cut_for(e)} if fam.cut_for(e) else {})})
               for e in chosen for m in names for s in range(n_seeds)}
    hashes = {c: cell_hash(cfg) for c, cfg in configs.items()}
    store = Store(path)  # opened for writing only now, every argument checked
    t_all, ran = time.perf_counter(), 0
    try:
        mine = store.claim(list(hashes.values()))
        todo = [c for c in configs if hashes[c] in mine]
        bar = Progress(f"suite {family}", total=len(todo), enabled=progress)
        bar.note(f"{len(configs)} cells ({len(chosen)} entries x {len(names)} methods x {n_seeds} seeds), "
                 f"{len(configs) - len(todo)} stored or claimed by another run, {len(todo)} to run"
                 + (" as Ray tasks" if ray else ""))
        groups: dict = {}  # (entry, seed) -> its cells: one task, sharing the head and the localisation
        for c in todo:
            groups.setdefault((c[0], c[2]), []).append(c)
        common = dict(family=family, configs=configs, hashes=hashes, options=options, repair_samples=repair_samples,
                      data_dir=data_dir, versions=versions, cpu=cpu)

        def stored(recs):
            nonlocal ran
            for c, rec, summ in recs:
                store.add([rec])
                ran += 1
                red = summ["violation_reduction"]
                bar.note(f"{ran}/{len(todo)} {c[0]} {c[1]} seed {c[2]}: violation "
                         f"{summ['violation_before']:.4f} -> {summ['violation_after']:.4f} "
                         f"({'n/a' if red is None else f'{100 * red:.1f}%'}), accuracy "
                         f"{-summ['accuracy_drop_points']:+.2f} pts{' DEGENERATE' if summ['degenerate'] else ''}, "
                         f"{rec['timings']['seconds']:.1f} s")
                bar.update(ran, "cells")

        if ray:
            from jaxrepair.sweep import ray_map

            ray_map(_ray_entry_seed, [(k, cs, common) for k, cs in groups.items()], lambda args, recs: stored(recs),
                    address=ray_address, env_keys=("JAXREPAIR_DATA",))
        else:
            benches = {}
            for (entry, s), cs in groups.items():
                if entry not in benches:
                    benches = {entry: zoo.load(entry, progress=progress, data_dir=data_dir)}  # one entry held at a time
                stored(run_entry_seed(entry, s, cs, bench=benches[entry], **common))
        bar.close()
    finally:
        store.release()
        store.close()
    result = {"family": family, "ran": ran, "cells": len(configs), "wall_s": time.perf_counter() - t_all,
              "store": str(out / f"suite_{family}.sqlite")}
    if report:
        from jaxrepair.suite._report import report as write_report

        result["report"] = write_report(out / f"suite_{family}.sqlite", out_dir=out,
                                        wanted=set(hashes.values()), note=note)
    return result


def run_entry_seed(entry: str, s: int, cells: list, *, family: str, configs: dict, hashes: dict, options: dict,
                   repair_samples: int, data_dir, versions: dict, cpu: str, bench=None):
    """The cells of one (entry, seed): the head past the cut and the ACE localisation computed once
    and shared by its methods. Yields ``(cell, record, summary)`` as each cell ends (the caller
    writes it, so a failure keeps the cells before it)."""
    from jaxrepair import repair, zoo

    fam = families()[family]
    bench = bench if bench is not None else zoo.load(entry, progress=False, data_dir=data_dir)
    small = len(bench.splits["test"]["y"]) < SMALL_TEST if bench.splits else False
    b_s = resplit(bench, s) if small else bench
    task = repair.from_zoo(b_s, repair_samples=repair_samples, seed=s)
    base = outcomes(task, bench.model)
    before = task.report(bench.model)
    shared = {}  # the head past the cut and the ACE localisation, computed once
    for c in cells:
        m = repair.get_method(c[1])
        model, on, prep_s = bench.model, task, 0.0
        if fam.cut_for(entry) and m.level == "neuron":  # the head after the cut: the whole network's figures
            if "low" not in shared:
                t = time.perf_counter()
                shared["low"] = repair.lower(bench.model, task, fam.cut_for(entry))
                shared["low_s"] = time.perf_counter() - t
            (model, on), prep_s = shared["low"], shared["low_s"]
        loc = ("loc", m.level)  # the ACE of the network this method is given
        if m.ranking == "ace":
            if loc not in shared:
                t = time.perf_counter()
                shared[loc] = (repair.localize(model, on), time.perf_counter() - t)
            prep_s += shared[loc][1]
        t = time.perf_counter()
        r = m(model, on, seed=s, localization=m.shared_localization(ace=shared.get(loc, (None,))[0]),
              **options.get(c[1], {}))
        wall = time.perf_counter() - t + prep_s
        after = outcomes(on, r.model)
        summ = r.summary()
        metrics = {**summ, "before": _plain(before), "after": _plain(r.after), "selected": len(r.selected),
                   "resplit": small, "test_rows": len(base["c"]),
                   **({"proven": bool(r.certificate["proven"]), "verdict": r.certificate["verdict"]}
                      if r.certificate else {}),
                   "outcomes": {"v0": _pack(base["v"]), "v1": _pack(after["v"]), "w": _pack(base["w"]),
                                "c0": _pack(base["c"]), "c1": _pack(after["c"])}}
        yield (c, {"hash": hashes[c], "config": {**configs[c], "machine": cpu}, "metrics": metrics,
                   "timings": {"seconds": wall, "prepare_s": prep_s, **r.timings}, "versions": versions,
                   "created": time.time()}, summ)


def _ray_entry_seed(key, cells, common):
    """One (entry, seed) on a Ray worker (:func:`jaxrepair.sweep.ray_worker_setup` first)."""
    from jaxrepair.sweep import ray_worker_setup

    ray_worker_setup()
    return list(run_entry_seed(key[0], key[1], cells, **common))


def _plain(d: dict) -> dict:
    """A report dict without what does not belong in a cell record (counterexamples, group tables)."""
    return {k: v for k, v in d.items() if k not in ("counterexamples", "groups")}
