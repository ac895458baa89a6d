"""The ACAS Xu repair suite: its metrics against numpy, a task whose outcome is known, and a rerun
that does no work."""

import json

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import suite
from jaxrepair.repair import _acasxu

SMALL = {"n_region": 4000, "n_falsify": 64, "n_cover": 500, "n_keep": 300}  # one compiled program per size: shared


def _numpy_scores(model, x):
    """Forward pass in float64 numpy from the network's affine maps (clip, affine, ReLU, ..., affine)."""
    chain = jr.verify.affine_chain(model)
    h = np.clip(np.asarray(x, np.float64), chain.clip_lo, chain.clip_hi)
    for i, (w, b) in enumerate(zip(chain.weights, chain.biases)):
        h = h @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        if i < len(chain.weights) - 1:
            h = np.maximum(h, 0)
    return h


def test_suite_is_vere_s_36_tasks():
    tasks = jr.repair.ACASXU_SUITE
    assert len(tasks) == len(set(tasks)) == 36
    phi2 = {(i, j) for i, j, p in tasks if p == 2}
    assert len(phi2) == 34 and (3, 3) not in phi2 and (4, 2) not in phi2 and all(i >= 2 for i, _ in phi2)
    assert (1, 9, 7) in tasks and (2, 9, 8) in tasks
    assert suite.parse_task("N2,1-phi2") == (2, 1, 2) and suite.parse_task("1,9,7") == (1, 9, 7)
    with pytest.raises(ValueError, match="N<i>,<j>-phi<n>"):
        suite.parse_task("n2_1")


def test_metrics_match_numpy():
    original = jr.data.load_acasxu(2, 1)
    params = jax.tree.map(lambda v: v * 1.02, original.params())  # a slightly different network
    repaired = original.with_params(params)
    rng = np.random.default_rng(0)
    prop = jr.properties.Safety(2)
    box = prop.boxes[0]
    region = (box[:, 0] + rng.uniform(size=(4000, 5)) * (box[:, 1] - box[:, 0])).astype(np.float32)
    y0 = _numpy_scores(original, region)
    bad = region[np.argmax(y0, 1) == 0]  # φ2 violated: COC is the maximal score
    assert len(bad) > 5
    lo, hi = _acasxu.input_domain(original)
    dom = (lo + rng.uniform(size=(3000, 5)) * (hi - lo)).astype(np.float32)
    yd = _numpy_scores(original, dom)
    inside = np.all((dom >= box[:, 0]) & (dom <= box[:, 1]), 1)
    dom = dom[~(inside & (np.argmax(yd, 1) == 0))]
    sets = _acasxu.AcasxuSets(bad[: len(bad) // 2], bad[len(bad) // 2:], dom, np.argmin(_numpy_scores(original, dom), 1))
    m = jr.repair.acasxu_metrics(original, repaired, prop, sets)
    yr = lambda x: _numpy_scores(repaired, x)  # noqa: E731
    assert m["repair_success"] == pytest.approx(np.mean(np.argmax(yr(sets.repair_violating), 1) != 0))
    assert m["generalisation"] == pytest.approx(np.mean(np.argmax(yr(sets.generalisation), 1) != 0))
    assert m["drawdown"] == pytest.approx(np.mean(np.argmin(yr(dom), 1) != sets.drawdown_advisory))
    assert 0 < m["drawdown"] < 0.5  # the perturbation changes some advisories, not most
    same = jr.repair.acasxu_metrics(original, original, prop, sets)
    assert same == {"repair_success": 0.0, "generalisation": 0.0, "drawdown": 0.0}


def test_a_repair_that_does_nothing_is_not_proven_and_says_so():
    # learning rate 0: the "repaired" network is the original N2,1, which violates φ2
    rec, result = jr.repair.repair_acasxu(2, 1, 2, rounds=1, steps=10, learning_rate=0.0, verify_timeout=5.0,
                                          sweep=0, bound_steps=0, **SMALL)
    assert rec["proven"] is False and rec["verdict"] == "unsafe" and rec["rounds"] == 1
    assert rec["repair_success"] == 0.0 and rec["generalisation"] == 0.0 and rec["drawdown"] == 0.0
    assert rec["sets"]["repair_violating"] > 0 and rec["sets"]["generalisation"] > 0
    assert rec["seconds"] >= rec["timings"]["sets_s"] > 0
    assert result.certificate["proven"] is False
    with pytest.raises(ValueError, match="unknown setting"):
        jr.repair.repair_acasxu(2, 1, 2, rounds_=1)


def test_task_sets_violate_where_they_should():
    model = jr.data.load_acasxu(2, 1)
    task, sets = jr.repair.acasxu_task(model, 2, **SMALL)
    ys = lambda x: _numpy_scores(model, x)  # noqa: E731
    assert np.all(np.argmax(ys(sets.repair_violating), 1) == 0)
    assert np.all(np.argmax(ys(sets.generalisation), 1) == 0)  # fresh falsifier finds, all violations
    assert np.all(jr.properties.Safety(2).contains(sets.generalisation))
    d_in = jr.properties.Safety(2).contains(sets.drawdown)
    assert not np.any(np.argmax(ys(sets.drawdown[d_in]), 1) == 0)  # no violating input in the drawdown set
    assert np.array_equal(sets.drawdown_advisory, np.argmin(ys(sets.drawdown), 1))
    rep = task.data["repair"]["property"]
    n_bad = len(sets.repair_violating)
    assert np.allclose(np.asarray(rep["x"])[:n_bad], sets.repair_violating)
    w = np.asarray(rep["weight"])
    assert w[0] > 1 and w[-1] == 1  # the rare violating inputs weigh as much as the many covered ones


def test_suite_reruns_do_no_work(tmp_path, monkeypatch):
    calls = []

    def fake(i, j, phi, *, budget=None, progress=False, **settings):
        calls.append((i, j, phi))
        rec = {"task": jr.repair.acasxu_task_name(i, j, phi), "network": [i, j], "property": phi, "proven": i == 2,
               "verdict": "safe" if i == 2 else "unknown", "rounds": 1, "repair_success": 1.0,
               "generalisation": 0.5, "drawdown": 0.01 * j, "seconds": 10.0 * j, "timings": {"sets_s": 1.0},
               "certify": [{"round": 1}, {"round": 2, "bound": {"boxes": 10}}] if i == 3 else [{"round": 1}]}
        return rec, None

    monkeypatch.setattr(jr.repair, "repair_acasxu", fake)
    tasks = ["N2,1-phi2", "N3,4-phi2"]
    first = suite.acasxu(tmp_path, tasks=tasks, budget=30, progress=False)
    assert first["ran"] == 2 and calls == [(2, 1, 2), (3, 4, 2)]
    second = suite.acasxu(tmp_path, tasks=tasks, budget=30, progress=False)
    assert second["ran"] == 0 and len(calls) == 2 and second["stored"] == 2  # nothing run again
    s = second["summary"]
    assert s["proven"] == 1 and s["median_drawdown"] == pytest.approx(0.025) and s["median_seconds"] == 25.0
    doc = json.loads((tmp_path / "suite_acasxu.json").read_text())
    assert [r["task"] for r in doc["tasks"]] == ["N2,1-phi2", "N3,4-phi2"] and doc["environment"]["cpu"]
    md = (tmp_path / "suite_acasxu.md").read_text()
    assert "1 of 2 tasks proven safe" in md and "VeRe" in md and "15.26%" in md and "**no**" in md
    assert "| N2,1-phi2 | yes | safe | 1 | – |" in md and "| N3,4-phi2 | **no** | unknown | 1 | 2 |" in md  # bound rounds
    suite.acasxu(tmp_path, tasks=tasks, budget=60, progress=False)  # another budget: other records
    assert len(calls) == 4
    with pytest.raises(ValueError, match="not in the suite"):
        suite.acasxu(tmp_path, tasks=["N3,3-phi2"], progress=False)
