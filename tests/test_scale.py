"""Scale-out: sharded equals unsharded (8 forced host devices), 2 processes equal 1, sweeps resume.

Device counts are fixed when JAX starts, so the sharded runs happen in subprocesses
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``) running ``tests/_dist_worker.py``; the
reference runs here, on this process's single CPU device.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxrepair as jr

ROOT = Path(__file__).resolve().parents[1]


def reference_problem():
    """A 3→12→7→2 MLP with a fairness task on its third input (the same in every process)."""
    import jax

    model = jr.models.mlp([3, 12, 7, 2], key=jax.random.key(3))
    splits = {}
    for i, name in enumerate(["repair", "select", "test"]):
        rng = np.random.default_rng(10 + i)
        z = rng.normal(size=(120, 3)).astype(np.float32)
        z[:, 2] = rng.integers(0, 2, 120)
        splits[name] = {"x": z, "y": (z[:, 0] + 0.5 * z[:, 1] > 0).astype(np.int32)}
    task = jr.repair.custom_task("scale", jr.properties.IndividualFairness(2, (0.0, 1.0)), splits,
                                 effect=jr.causal.Fairness.make(2, [0, 1]))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(45, 3)).astype(np.float32)
    x[:, 2] = rng.integers(0, 2, 45)
    return model, x, task


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _check(out: Path, model, x, task):
    import jax

    got = np.load(out)
    sites = ["layer1", "layer2"]
    loc = jr.causal.ace(model, x, jr.causal.TargetOutput(1), sites=sites, num_values=5, batch_size=16)
    r = jr.repair(model, task, k=2, strategy="pso", generations=8, population_size=10, localization=loc)
    np.testing.assert_allclose(got["curve1"], loc.sites["layer1"].curve, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["curve2"], loc.sites["layer2"].curve, rtol=1e-5, atol=1e-6)
    assert float(got["baseline"]) == pytest.approx(loc.baseline, abs=1e-6)
    sol = r.solution["layer1"] if "layer1" in r.solution else list(r.solution.values())[0]
    np.testing.assert_allclose(got["solution"], np.asarray(sol), rtol=1e-5, atol=1e-6)
    assert len(jax.devices()) == 1
    return got


def test_sharded_over_8_devices_equals_single_device(tmp_path):
    model, x, task = reference_problem()
    out = tmp_path / "sharded.npz"
    subprocess.run([sys.executable, "-m", "tests._dist_worker", str(out), "1", "0", "0"], cwd=ROOT, env=_env(8),
                   check=True, timeout=300)
    got = _check(out, model, x, task)
    assert int(got["devices"]) == 8 and int(got["processes"]) == 1


def test_two_processes_equal_one(tmp_path):
    model, x, task = reference_problem()
    out = tmp_path / "two.npz"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tests._dist_worker", str(out), "2", str(i), str(port)], cwd=ROOT,
                              env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
    got = _check(out, model, x, task)
    assert int(got["devices"]) == 4 and int(got["processes"]) == 2


SWEEP = """store = "{store}"
[grid]
entry = ["german-sex"]
strategy = ["pso", "de"]
k = [2]
a = [0.2, 0.5]
seed = [0, 1]
[settings]
generations = 4
population = 6
repair_samples = 200
"""


def _rows(table: str):
    """Table rows without the timing column (the only thing that may differ between runs)."""
    return [line.rsplit("|", 2)[0] for line in table.strip().splitlines()[2:]]


def test_sweep_resumes_after_a_kill_and_reports_the_same_table(tmp_path):
    import sqlite3
    import time

    from jaxrepair import sweep

    env = _env(1)
    env["JAXREPAIR_CACHE"] = str(tmp_path / "cache")
    cfg = tmp_path / "s.toml"
    cfg.write_text(SWEEP.format(store="killed.sqlite"))
    store = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "jaxrepair.cli", "sweep", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    count, deadline = 0, time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                with sqlite3.connect(str(store)) as db:
                    count = db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
            if count:
                break
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no clean-up
    proc.wait()
    assert count == 4, f"expected one finished group of 4 cells before the kill, saw {count}"
    with sqlite3.connect(str(store)) as db:
        rows = db.execute("SELECT hash, metrics FROM cells").fetchall()
    assert len(rows) == 4 and all(json_ok(m) for _, m in rows)  # whole records only
    # restart: the finished group is skipped, the other one runs
    done = subprocess.run([sys.executable, "-m", "jaxrepair.cli", "sweep", str(cfg)], cwd=ROOT, env=env,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert '"skipped": 4' in done.stdout.decode() and '"ran": 4' in done.stdout.decode()
    # an uninterrupted run gives the same table
    clean_cfg = tmp_path / "clean.toml"
    clean_cfg.write_text(SWEEP.format(store="clean.sqlite"))
    clean = subprocess.run([sys.executable, "-m", "jaxrepair.cli", "sweep", str(clean_cfg)], cwd=ROOT, env=env,
                           capture_output=True, timeout=300)
    assert clean.returncode == 0, clean.stderr.decode()[-2000:]
    a = sweep.report(store, tmp_path / "r1")
    b = sweep.report(tmp_path / "clean.sqlite", tmp_path / "r2")
    assert a["cells"] == b["cells"] == 8
    assert _rows(a["table"]) == _rows(b["table"])
    assert Path(a["files"]["tradeoff_plot"]).exists() and Path(a["files"]["runtime_plot"]).exists()


def json_ok(text: str) -> bool:
    import json

    d = json.loads(text)
    return {"violation_before", "violation_after", "accuracy_before", "accuracy_after"} <= set(d)


def test_sweep_config_errors(tmp_path):
    from jaxrepair import sweep

    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nentry = ['nope']\n")
    with pytest.raises(ValueError, match="unknown zoo entries"):
        sweep.load_config(bad)
    bad.write_text("[grid]\nentry = ['german-sex']\ncolour = [1]\n")
    with pytest.raises(ValueError, match="unknown grid key"):
        sweep.load_config(bad)
    bad.write_text("[grid\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        sweep.load_config(bad)
    cfg = tmp_path / "ok.toml"
    cfg.write_text(SWEEP.format(store="x.sqlite"))
    c = sweep.load_config(cfg)
    assert len(sweep.cells(c)) == 8 and c["store"] == tmp_path / "x.sqlite"
    hashes = {sweep.cell_hash(x, c["settings"]) for x in sweep.cells(c)}
    assert len(hashes) == 8


def test_sweep_across_two_processes_resumes_consistently(tmp_path):
    """Process 0 owns the store; the cells it already holds are broadcast, so both processes skip
    the same ones and run the rest together (a mismatch would deadlock or duplicate work)."""
    import json
    import sqlite3

    env = _env(2)
    env["JAXREPAIR_CACHE"] = str(tmp_path / "cache")
    cfg = tmp_path / "s.toml"

    def run_pair(seeds):
        cfg.write_text(SWEEP.format(store="two.sqlite").replace('strategy = ["pso", "de"]', 'strategy = ["pso"]')
                       .replace("seed = [0, 1]", f"seed = {seeds}"))
        port = _free_port()
        procs = [subprocess.Popen([sys.executable, "-m", "jaxrepair.cli", "--coordinator", f"localhost:{port}",
                                   "--num-processes", "2", "--process-id", str(i), "sweep", str(cfg)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
        outs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
        assert all(p.returncode == 0 for p in procs), "\n".join(outs)[-3000:]
        return [json.loads(o[o.rindex("{\n"):]) for o in outs]

    first = run_pair("[0]")
    assert [r["ran"] for r in first] == [2, 2] and first[0]["stored"] == 2 and first[1]["stored"] is None
    second = run_pair("[0, 1]")
    assert [(r["ran"], r["skipped"]) for r in second] == [(2, 2), (2, 2)] and second[0]["stored"] == 4
    with sqlite3.connect(str(tmp_path / "two.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 4
