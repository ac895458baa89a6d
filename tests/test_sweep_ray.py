"""Sweeps on Ray: a local cluster on 127.0.0.1 with two worker processes runs each group as a task;
the records equal the local sweep's, a worker killed mid-run loses and duplicates nothing, and a
stopped sweep resumes without redoing a group. Skipped without the [ray] extra."""

import sqlite3

import pytest

from jaxrepair import sweep

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # Ray starts its processes after JAX

CONFIG = """store = "{store}"
[grid]
entry = ["german-sex", "german-age"]
strategy = ["pso", "de"]
k = [3]
seed = [0, 1, 2]
[settings]
generations = 3
population = 8
repair_samples = 300
"""


def _write(tmp_path, name):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / f"{name}.sqlite"))
    return cfg


def _cells(path) -> dict:
    st = sweep.Store(path, readonly=True)
    recs = st.records()
    st.close()
    return {r["hash"]: (r["config"], r["metrics"]) for r in recs}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    d = tmp_path_factory.mktemp("local")
    sweep.run(_write(d, "local"), progress=False)
    return _cells(d / "local.sqlite")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes on 127.0.0.1; the first group task to start kills its own worker
    (JAXREPAIR_SWEEP_DIE_ONCE), and the workers share a compile cache of their own."""
    d = tmp_path_factory.mktemp("ray")
    marker = d / "died"
    env = {"JAXREPAIR_SWEEP_DIE_ONCE": str(marker), "JAXREPAIR_COMPILE_CACHE_DIR": str(d / "jit"),
           "JAXREPAIR_NO_COMPILE_CACHE": ""}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": env})
    yield marker
    ray.shutdown()


def test_ray_sweep_with_a_killed_worker_stores_every_cell_once_with_the_local_numbers(tmp_path, local, cluster):
    res = sweep.run(_write(tmp_path, "ray"), progress=False, ray=True)
    assert cluster.exists()  # a worker did die mid-run (and its group was rerun on another)
    assert res["ran"] == 12 and res["stored"] == 12
    rows = sqlite3.connect(tmp_path / "ray.sqlite").execute("SELECT hash, COUNT(*) FROM cells GROUP BY hash").fetchall()
    assert len(rows) == 12 and all(n == 1 for _, n in rows)
    assert sqlite3.connect(tmp_path / "ray.sqlite").execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    got = _cells(tmp_path / "ray.sqlite")
    assert got.keys() == local.keys()
    for h, (cfg, m) in local.items():
        assert got[h][0] == cfg
        assert got[h][1] == m, cfg  # the same numbers, cell for cell


def test_a_stopped_ray_sweep_resumes_without_redoing_groups(tmp_path, local, cluster):
    cfg = _write(tmp_path, "resume")
    st = sweep.Store(tmp_path / "resume.sqlite")  # one group already stored, as a stopped sweep leaves it
    first = [c for c in sweep.cells(sweep.load_config(cfg)) if (c["entry"], c["strategy"]) == ("german-sex", "pso")]
    st.add([{"hash": sweep.cell_hash(c, sweep.load_config(cfg)["settings"]), "config": {"from": "earlier run"},
             "metrics": {}, "timings": {}, "versions": {}, "created": 0.0} for c in first])
    st.close()
    res = sweep.run(cfg, progress=False, ray=True)
    assert res["skipped"] == 3 and res["ran"] == 9 and res["stored"] == 12
    got = _cells(tmp_path / "resume.sqlite")
    assert sum(1 for c, _ in got.values() if c == {"from": "earlier run"}) == 3  # not redone, not overwritten


def test_the_suite_on_ray_gives_the_local_records(tmp_path, cluster):
    """Each (entry, seed) of the suite as a Ray task: the same cells and numbers as the local run."""
    import jaxrepair as jr

    kw = dict(methods=["prune", "ace-finetune"], seeds=2, entries=["german-sex"], repair_samples=300,
              options={"ace-finetune": {"steps": 20, "k_values": [5]}}, progress=False, report=False)
    jr.suite.run("fairness", tmp_path / "local", **kw)
    res = jr.suite.run("fairness", tmp_path / "ray", ray=True, **kw)
    assert res["ran"] == 4
    local, ray_ = (_cells(tmp_path / d / "suite_fairness.sqlite") for d in ("local", "ray"))
    assert local.keys() == ray_.keys() and len(local) == 4
    for h, (cfg, m) in local.items():
        assert ray_[h][0] == cfg and ray_[h][1] == m, cfg["method"]
