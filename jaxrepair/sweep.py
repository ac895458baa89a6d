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
    max_drop = 0.0075                 # default "preset" (the preset's budget, as jr.repair); "none": no budget
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
import time
from pathlib import Path

import jax
import numpy as np

GRID_KEYS = ("entry", "property", "strategy", "k", "a", "seed")
# Defaults are jr.repair's: the preset's accuracy budget ("preset"; "none" for no budget), score and bounds.
SETTINGS = {"generations": None, "population": None, "repair_samples": 5000, "space": "factor", "max_drop": "preset",
            "bounds": None, "score": None, "devices": 0}


TOP_KEYS = ("store", "grid", "settings")
PROPERTIES = ("default", "fairness", "backdoor", "safety")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_settings(path, st: dict) -> None:
    def bad(key, want):
        raise ValueError(f"{path}: setting {key} = {st[key]!r}; expected {want}")

    if st["generations"] is not None and not (_is_int(st["generations"]) and st["generations"] >= 1):
        bad("generations", "a positive integer")
    if st["population"] is not None and not (_is_int(st["population"]) and st["population"] >= 4):
        bad("population", "an integer >= 4")
    if not (_is_int(st["repair_samples"]) and st["repair_samples"] >= 1):
        bad("repair_samples", "a positive integer")
    if st["space"] not in ("factor", "delta"):
        bad("space", "'factor' or 'delta'")
    md = st["max_drop"]
    if md == "none":
        st["max_drop"] = None
    elif md != "preset" and not (isinstance(md, (int, float)) and not isinstance(md, bool) and 0 <= md <= 1):
        bad("max_drop", "an accuracy fraction in [0, 1] (0.01 = one point), \"preset\" (the default: the preset's "
                        "budget) or \"none\" (no budget)")
    b = st["bounds"]
    if b is not None:
        ok = (st["space"] == "factor" and isinstance(b, (list, tuple)) and len(b) == 2
              and all(isinstance(v, (int, float)) and np.isfinite(v) for v in b) and b[0] < b[1]) or \
             (st["space"] == "delta" and isinstance(b, (int, float)) and not isinstance(b, bool) and np.isfinite(b)
              and b > 0)
        if not ok:
            bad("bounds", "[LOW, HIGH] with LOW < HIGH for factors, a positive number (x layer std) for deltas")
    from jaxrepair import causal

    if st["score"] is not None and st["score"] not in causal.SCORES:
        bad("score", f"one of {list(causal.SCORES)}")
    if not (_is_int(st["devices"]) and st["devices"] >= 0):
        bad("devices", "0 (all devices) or a positive integer")


def _check_grid(path, grid: dict) -> None:
    from jaxrepair import repair, zoo

    missing = [e for e in grid["entry"] if e not in zoo.ENTRIES]
    if missing:
        raise ValueError(f"{path}: unknown zoo entries {missing}; known: {sorted(zoo.ENTRIES)}")
    bad = [p for p in grid["property"] if p not in PROPERTIES]
    if bad:
        raise ValueError(f"{path}: unknown property {bad}; allowed: {list(PROPERTIES)}")
    for st in grid["strategy"]:
        if not isinstance(st, str):
            raise ValueError(f"{path}: strategy {st!r} must be a name")
        try:
            repair.get_strategy(st)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    for e in grid["entry"]:
        kind = zoo.ENTRIES[e].kind
        wrong = [p for p in grid["property"] if p not in ("default", kind)]
        if wrong:
            raise ValueError(f"{path}: {e} is a {kind} benchmark; property {wrong} does not apply")
    bad = [k for k in grid["k"] if not (_is_int(k) and k >= 1)]
    if bad:
        raise ValueError(f"{path}: k must be positive integers (leave k out for the preset's), got {bad}")
    bad = [a for a in grid["a"] if not (isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1)]
    if bad:
        raise ValueError(f"{path}: a must be numbers in [0, 1] (leave a out for the preset's), got {bad}")
    bad = [s for s in grid["seed"] if not (_is_int(s) and 0 <= s < 2**31)]
    if bad:
        raise ValueError(f"{path}: seed must be non-negative integers, got {bad}")


def load_config(path) -> dict:
    """Reads and checks a sweep config: every table, key and value, before any work starts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sweep config")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError("YAML sweep configs need PyYAML (pip install pyyaml); TOML needs nothing") from None
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    else:
        import tomllib

        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from None
    if not isinstance(cfg, dict) or "grid" not in cfg:
        raise ValueError(f"{path}: a sweep config needs a [grid] table")
    unknown = sorted(set(cfg) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) or table(s) {unknown}; allowed: {list(TOP_KEYS)}")
    grid = cfg["grid"]
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: [grid] must be a table")
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown grid key(s) {unknown}; allowed: {list(GRID_KEYS)}")
    if "entry" not in grid:
        raise ValueError(f"{path}: the grid needs at least 'entry'")
    user_settings = cfg.get("settings", {})
    if not isinstance(user_settings, dict):
        raise ValueError(f"{path}: [settings] must be a table")
    settings = dict(SETTINGS)
    bad = sorted(set(user_settings) - set(SETTINGS))
    if bad:
        raise ValueError(f"{path}: unknown setting(s) {bad}; allowed: {sorted(SETTINGS)}")
    settings.update(user_settings)
    _check_settings(path, settings)
    # absent k / a mean "the preset's"; stored as 0 / -1 so that cell hashes stay stable
    lists = {k: _as_list(grid.get(k, d)) for k, d in
             (("entry", None), ("property", "default"), ("strategy", "pso"), ("k", None), ("a", None), ("seed", 0))}
    empty = [k for k, v in lists.items() if not v]
    if empty:
        raise ValueError(f"{path}: grid key(s) {empty} are empty lists")
    for k, v in lists.items():
        twice = sorted({repr(x) for x in v if v.count(x) > 1})
        if twice:
            raise ValueError(f"{path}: grid key {k} lists {', '.join(twice)} more than once; each value once")
    _check_grid(path, {**lists, "k": [k for k in lists["k"] if k is not None],
                       "a": [a for a in lists["a"] if a is not None]})
    lists["k"] = [0 if k is None else k for k in lists["k"]]
    lists["a"] = [-1.0 if a is None else a for a in lists["a"]]
    store = cfg.get("store")
    if store is not None and not (isinstance(store, str) and store):
        raise ValueError(f"{path}: store must be a file name, got {store!r}")
    store = Path(store or path.with_suffix(".sqlite").name)
    if not store.is_absolute():
        store = path.parent / store
    return {"grid": lists, "settings": settings, "store": store, "path": str(path)}


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def cells(cfg: dict) -> list[dict]:
    g = cfg["grid"]
    return [dict(zip(GRID_KEYS, combo)) for combo in itertools.product(*(g[k] for k in GRID_KEYS))]


def cell_hash(cell: dict, settings: dict) -> str:
    body = json.dumps({"cell": cell, "settings": {k: v for k, v in settings.items() if k != "devices"}}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- the store


def _json(obj) -> str:
    from jaxrepair import records

    return records.dumps(obj, indent=None)


_COLUMNS = ("hash", "config", "metrics", "timings", "versions", "created")


def _owner() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _claim_alive(owner: str, claimed: float, *, ttl: float = 24 * 3600) -> bool:
    """A claim holds while its process lives (same host) or, for another host, for ``ttl`` seconds."""
    import os
    import socket

    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - claimed < ttl


class Store:
    """Append-only SQLite store of cell records, with claims so that two sweeps on one store split
    the cells instead of both computing them.

    ``Store(path)`` opens (or creates) a store for writing; ``Store(path, readonly=True)`` opens an
    existing one read-only and refuses a file that is not a jaxrepair store, leaving it unchanged.
    """

    def __init__(self, path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such sweep store")
            try:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
                cols = [r[1] for r in self.db.execute("PRAGMA table_info(cells)")]
            except sqlite3.DatabaseError as e:
                raise ValueError(f"{self.path}: not a jaxrepair sweep store ({e})") from None
            if tuple(cols) != _COLUMNS:
                self.db.close()
                raise ValueError(f"{self.path}: not a jaxrepair sweep store (no 'cells' table with columns {list(_COLUMNS)})")
            return
        if self.path.exists() and not self.path.is_file():
            raise ValueError(f"{self.path}: the sweep store must be a file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30)
            existing = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except (sqlite3.Error, OSError) as e:
            raise ValueError(f"{self.path}: cannot open or create the sweep store there ({e})") from None
        if existing - {"cells", "claims"}:
            self.db.close()
            raise ValueError(f"{self.path}: a database with other tables {sorted(existing - {'cells', 'claims'})}; "
                             f"not a jaxrepair sweep store (choose another store file)")
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS cells (hash TEXT PRIMARY KEY, config TEXT NOT NULL, metrics TEXT NOT NULL,"
                            " timings TEXT NOT NULL, versions TEXT NOT NULL, created REAL NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS claims (hash TEXT PRIMARY KEY, owner TEXT NOT NULL, claimed REAL NOT NULL)")
            self.db.commit()
        except sqlite3.Error as e:
            raise ValueError(f"{self.path}: cannot write the sweep store ({e})") from None

    def done(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT hash FROM cells")}

    def claim(self, hashes: list[str]) -> set[str]:
        """Claims the cells no one else holds (one transaction); returns the hashes claimed."""
        me = _owner()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            done = self.done()
            held = {h: (o, c) for h, o, c in self.db.execute("SELECT hash, owner, claimed FROM claims")}
            mine = {h for h in hashes if h not in done
                    and (h not in held or held[h][0] == me or not _claim_alive(*held[h]))}
            self.db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", [(h, me, time.time()) for h in mine])
        return mine

    def add(self, records: list[dict]) -> None:
        """All records of one group in one transaction (all or nothing); their claims are released."""
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?)",
                [(r["hash"], _json(r["config"]), _json(r["metrics"]), _json(r["timings"]),
                  _json(r["versions"]), r["created"]) for r in records])
            self.db.executemany("DELETE FROM claims WHERE hash = ?", [(r["hash"],) for r in records])

    def release(self) -> None:
        """Drops this process's remaining claims (a failed or interrupted sweep)."""
        with self.db:
            self.db.execute("DELETE FROM claims WHERE owner = ?", (_owner(),))

    def records(self) -> list[dict]:
        rows = self.db.execute("SELECT hash, config, metrics, timings, versions, created FROM cells ORDER BY created, hash")
        return [{"hash": h, "config": json.loads(c), "metrics": json.loads(m), "timings": json.loads(t),
                 "versions": json.loads(v), "created": cr} for h, c, m, t, v, cr in rows]

    def close(self):
        """Closes the store; a writer leaves it as one file (the write-ahead log folded back in) when
        no other process has it open, so that read-only openings later add no side files."""
        if not self.readonly:
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass  # another process holds it: it stays in WAL mode
        self.db.close()


# ----------------------------------------------------------------------------------- running


def _group_key(cell):
    return (cell["entry"], cell["property"], cell["strategy"])


def run_group(group: tuple, members: list[dict], st: dict, versions: dict, *, localization=None):
    """One (entry, property, strategy) group: the pipeline of jr.repair (jr.repair.plan) with k_max
    slots for the group's largest k, every cell's search in one call of one compiled program.
    Returns ``(records, localization)``; the records are the store's rows (nothing is written here)."""
    from jaxrepair import repair, zoo

    entry, prop, strat_name = group
    t0 = time.perf_counter()
    bench = zoo.load(entry)
    if prop not in ("default", bench.entry.kind):
        raise ValueError(f"{entry} is a {bench.entry.kind} benchmark; property {prop!r} does not apply")
    task = repair.from_zoo(bench, repair_samples=st["repair_samples"], seed=0)
    preset = repair.preset_for(task.kind)
    ks = [int(c["k"]) or preset.k for c in members]
    a_vals = [float(c["a"]) if float(c["a"]) >= 0 else preset.a for c in members]
    devices = None if not st["devices"] else int(st["devices"])
    pl = repair.plan(bench.model, task, k=min(ks), k_max=max(ks), score=st["score"], space=st["space"],
                     bounds=tuple(st["bounds"]) if isinstance(st["bounds"], list) else st["bounds"],
                     strategy=strat_name, generations=st["generations"], population_size=st["population"],
                     max_drop=repair.FROM_PRESET if st["max_drop"] == "preset" else st["max_drop"],
                     localization=localization, devices=devices)
    t_loc = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = pl.search(seeds=[int(c["seed"]) for c in members], a=a_vals, selections=[pl.ranking[:k] for k in ks])
    t_search = time.perf_counter() - t1
    t2 = time.perf_counter()
    before = task.report(bench.model)
    recs = []
    for i, c in enumerate(members):
        r = pl.result(out, i, seed=int(c["seed"]), a=a_vals[i], chosen=pl.ranking[: ks[i]], before=before)
        s = r.summary()
        metrics = {k_: s[k_] for k_ in ("violation_before", "violation_after", "accuracy_before", "accuracy_after")}
        metrics.update(select_fitness=r.search["select_fitness"], generations_run=int(r.search["generations_run"]),
                       selected=[(n.site, n.unit) for n in r.selected])
        if "drawdown" in s:
            metrics["drawdown"] = s["drawdown"]
        metrics["degenerate"] = s["degenerate"]
        recs.append({"hash": cell_hash(c, st), "config": {**c, "a_used": a_vals[i], "k_used": ks[i], **st},
                     "metrics": metrics, "versions": versions, "created": time.time(),
                     "timings": {"localize_s": t_loc / len(members), "search_s": t_search / len(members),
                                 "group_localize_s": t_loc, "group_search_s": t_search}})
    t_rep = time.perf_counter() - t2
    for r in recs:
        r["timings"]["report_s"] = t_rep / len(members)
    return recs, pl.localization


def _group_line(gi, n, group, members, recs) -> str:
    entry, _, strat_name = group
    ks = sorted({r["config"]["k_used"] for r in recs})
    t_search = recs[0]["timings"]["group_search_s"] if recs else 0.0
    return (f"group {gi}/{n} {entry} {strat_name} k={ks}: {len(members)} cells in one program "
            f"(search {t_search:.1f}s), stored")


def run(config_path, *, progress: bool = True, ray_address: str | None = None, ray: bool = False) -> dict:
    """Runs every cell of the config that the store does not hold yet; returns a summary.
    ``ray=True``: each group is a Ray task (:func:`_ray_groups`), on the cluster at ``ray_address``
    (None: a local one on this machine's cores); only this process writes the store."""
    from jaxrepair import distributed, records

    cfg = load_config(config_path)
    st = cfg["settings"]
    ray = ray or bool(ray_address)  # an address means a Ray run
    if ray:
        ray_module()  # a missing extra is reported before the store is touched
        if jax.process_count() > 1:
            raise ValueError("a Ray sweep is driven by one process; do not combine --ray with --num-processes")
    store = Store(cfg["store"]) if distributed.is_main() else None
    hashes = [cell_hash(c, st) for c in cells(cfg)]
    # cells finished, or claimed by another sweep on this store, are skipped
    done = set(hashes) - store.claim(hashes) if store is not None else set()
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
    t_all = time.perf_counter()
    bar = records.Progress("sweep", total=len(groups), enabled=progress)
    bar.note(f"{len(cells(cfg))} cells, {len(done)} already stored or claimed by another sweep, {len(todo)} to run in "
             f"{len(groups)} compiled group(s)" + (" as Ray tasks" if ray else ""))
    try:
        if ray:
            _ray_groups(groups, st, versions, store, bar, address=ray_address)
        else:
            locs = {}
            for gi, (group, members) in enumerate(groups.items()):
                recs, locs[group[:2]] = run_group(group, members, st, versions, localization=locs.get(group[:2]))
                if store is not None:
                    store.add(recs)
                bar.note(_group_line(gi + 1, len(groups), group, members, recs))
                bar.update(gi + 1, "groups")
        bar.close()
    finally:
        if store is not None:
            store.release()  # claims of cells not run (a failure or Ctrl-C) go back
    n = len(store.done()) if store is not None else None
    if store is not None:
        store.close()
    return {"store": str(cfg["store"]), "ran": len(todo), "skipped": len(done), "stored": n,
            "wall_s": time.perf_counter() - t_all}


# ----------------------------------------------------------------------------------- Ray

#: How often Ray reruns a group whose worker died (a lost process, not an error the group raised).
RAY_RETRIES = 3


def ray_module():
    try:
        import ray
    except ImportError:
        raise ImportError("sweeps on Ray need the 'ray' package: pip install 'jaxrepair[ray]'") from None
    return ray


def ray_worker_setup() -> None:
    """What a Ray task does first on its worker: the compile cache on (workers share compiled
    programs through it). ``JAXREPAIR_SWEEP_DIE_ONCE=FILE`` (tests): the first task to find no FILE
    creates it and kills its own worker process, as a lost machine would."""
    import os
    import signal

    marker = os.environ.get("JAXREPAIR_SWEEP_DIE_ONCE")
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
    from jaxrepair import compile_cache

    compile_cache.enable()


def _ray_worker_group(group, members, st, versions):
    """A group on a Ray worker: :func:`ray_worker_setup`, then :func:`run_group`."""
    ray_worker_setup()
    recs, _ = run_group(group, members, st, versions)
    return recs


#: Variables a Ray worker gets from the driver's environment (caches, platforms, the test hook).
RAY_ENV = ("JAXREPAIR_SWEEP_DIE_ONCE", "JAXREPAIR_CACHE", "JAXREPAIR_NO_COMPILE_CACHE", "JAXREPAIR_COMPILE_CACHE_DIR",
           "JAX_PLATFORMS")


def ray_map(fn, calls: list, on_result, *, address=None, gpus: int = 0, env_keys=()) -> None:
    """``fn(*args)`` for every ``args`` of ``calls`` as a Ray task; ``on_result(args, value)`` in this
    process as each one finishes (the one writer). A task whose worker dies is rerun up to
    :data:`RAY_RETRIES` times; an error the task raises is raised here as it would be locally.
    Starts a local Ray instance on this machine's cores unless Ray is running or ``address`` names
    a cluster; ``gpus``: GPUs per task where the cluster has them."""
    import os

    ray = ray_module()
    started = not ray.is_initialized()
    if started:
        env = {k: os.environ[k] for k in (*RAY_ENV, *env_keys) if k in os.environ}
        kw = dict(address=address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        if address is None:
            kw.update(address="local", num_cpus=os.cpu_count())
        ray.init(**kw)
    try:
        want = {"num_cpus": 1, "num_gpus": (gpus or 1) if ray.cluster_resources().get("GPU", 0) else 0}
        task = ray.remote(max_retries=RAY_RETRIES, retry_exceptions=False, **want)(fn)
        pending = {task.remote(*args): args for args in calls}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            args = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:  # the task itself failed: the same error as locally
                raise e.as_instanceof_cause() from None
            except ray.exceptions.WorkerCrashedError:
                raise RuntimeError(f"a task lost its worker {RAY_RETRIES + 1} times; what it holds is not stored "
                                   f"(rerun to retry it)") from None
            on_result(args, value)
    finally:
        if started:
            ray.shutdown()


def _ray_groups(groups: dict, st: dict, versions: dict, store, bar, *, address=None) -> None:
    """Every group as a Ray task (:func:`ray_map`); each group's records are written here, by the
    driver, as they arrive (one writer; a cell's hash is its key, so a rerun cannot store it twice).
    A stopped sweep resumes from the store like a local one."""
    done = []

    def arrived(args, recs):
        if store is not None:
            store.add(recs)
        done.append(args[0])
        bar.note(_group_line(len(done), len(groups), args[0], args[1], recs))
        bar.update(len(done), "groups")

    ray_map(_ray_worker_group, [(g, m, st, versions) for g, m in groups.items()], arrived, address=address,
            gpus=int(st["devices"]))


# ----------------------------------------------------------------------------------- reporting


def report(store_path, out_dir=None) -> dict:
    """Markdown table and plots (violation vs accuracy per strategy, runtime per phase) of a store."""
    from jaxrepair import records

    path = Path(store_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sweep store")
    st = Store(path, readonly=True)
    recs = st.records()
    st.close()
    rows = []
    for r in sorted(recs, key=lambda r: tuple(str(r["config"][k]) for k in GRID_KEYS)):
        c, m = r["config"], r["metrics"]
        red = 1 - m["violation_after"] / m["violation_before"] if m["violation_before"] > 0 else None
        rows.append((c["entry"], c["strategy"], c["k_used"], c["a_used"], c["seed"], m["violation_before"], m["violation_after"],
                     "degenerate" if m.get("degenerate") else "n/a" if red is None else f"{100 * red:.1f}%", f"{100 * (m['accuracy_before'] - m['accuracy_after']):.2f}",
                     f"{r['timings']['search_s']:.2f}"))
    table = records.markdown_table(["entry", "strategy", "k", "a", "seed", "violation before", "violation after", "reduction",
                                    "accuracy drop (pts)", "search s/cell"], rows)
    out = Path(out_dir) if out_dir else path.with_suffix("")
    out.mkdir(parents=True, exist_ok=True)
    md = f"# Sweep {path.name}\n\n{len(recs)} cells.\n\n{table}"
    files = {"markdown": str(records.write_text(_fresh(out / "report.md"), md))}
    plt = records.pyplot()
    if plt is not None and recs:
        strategies = sorted({r["config"]["strategy"] for r in recs})
        entries = sorted({r["config"]["entry"] for r in recs})
        markers = "osD^v<>Pph*"
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in recs:  # colour: strategy; marker: entry; hollow: degenerate
            c, m = r["config"], r["metrics"]
            color = f"C{strategies.index(c['strategy']) % 10}"
            ax.scatter(m["accuracy_after"], m["violation_after"], s=24, marker=markers[entries.index(c["entry"]) % len(markers)],
                       facecolors="none" if m.get("degenerate") else color, edgecolors=color, alpha=0.85)
        for e in entries:  # the unrepaired models, one per entry
            r0 = next(r for r in recs if r["config"]["entry"] == e)
            ax.scatter(r0["metrics"]["accuracy_before"], r0["metrics"]["violation_before"], marker="*", s=160,
                       facecolors="none", edgecolors="k")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], ls="", marker="o", color=f"C{i % 10}", label=s) for i, s in enumerate(strategies)]
        handles += [Line2D([], [], ls="", marker=markers[i % len(markers)], color="0.3", mfc="none", label=e)
                    for i, e in enumerate(entries)]
        handles.append(Line2D([], [], ls="", marker="*", color="k", mfc="none", ms=10, label="before repair"))
        ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="strategy / entry",
                  title_fontsize=7)
        ax.set_xlabel("test accuracy after repair")
        ax.set_ylabel("violation after repair (test)")
        ax.set_title(f"{len(recs)} cells: violation against accuracy (hollow: degenerate model)", fontsize=9)
        files["tradeoff_plot"] = str(records.save_figure(fig, _fresh(out / "violation_vs_accuracy.png")))
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(entries) * len(strategies)), 4))
        labels = [f"{e}\n{s}" for e in entries for s in strategies]
        bottom = np.zeros(len(labels))
        for phase in ("localize_s", "search_s", "report_s"):
            vals = np.array([np.mean([r["timings"].get(phase, 0.0) for r in recs
                                      if r["config"]["entry"] == e and r["config"]["strategy"] == s] or [0.0])
                             for e in entries for s in strategies])
            ax.bar(range(len(labels)), vals, bottom=bottom, label=phase.replace("_s", ""))
            bottom += vals
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel("seconds per cell (mean)")
        ax.set_title("runtime per phase; a group's shared work is divided among its cells", fontsize=9)
        ax.legend(title="phase", fontsize=7)
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
