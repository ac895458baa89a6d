"""jr.suite: statistics against scipy and simulation, splits, per-row outcomes, resumable runs,
refusals before work, and the leaderboard."""

import json

import numpy as np
import pytest
import scipy.stats

import jaxrepair as jr
from jaxrepair.cli import main
from jaxrepair.suite import _stats
from jaxrepair.sweep import Store


def _cell(v0, v1, c0, c1, w=None):
    v0 = np.asarray(v0, float)
    return {"v0": v0, "v1": np.asarray(v1, float), "w": np.ones_like(v0) if w is None else np.asarray(w, float),
            "c0": np.asarray(c0, float), "c1": np.asarray(c1, float)}


def _sim(rng, n, p0, p1, q0, q1):
    return _cell(rng.random(n) < p0, rng.random(n) < p1, rng.random(n) < q0, rng.random(n) < q1)


# --------------------------------------------------------------------------- statistics


def test_sign_flip_test_equals_scipys_paired_permutation_test():
    rng = np.random.default_rng(0)
    c0, c1 = rng.random(80) < 0.7, rng.random(80) < 0.6
    d = c1.astype(float) - c0.astype(float)
    got = _stats.sign_flip_test([d], rng=np.random.default_rng(1), b=20_000)
    ref = scipy.stats.permutation_test((c1.astype(float), c0.astype(float)), lambda a, b: np.mean(a - b),
                                       permutation_type="samples", n_resamples=20_000, random_state=2).pvalue
    assert got == pytest.approx(ref, abs=0.02)
    assert _stats.sign_flip_test([np.zeros(10)], rng=rng) == 1.0


def test_one_seed_interval_equals_scipys_paired_bootstrap():
    rng = np.random.default_rng(3)
    c = _sim(rng, 1000, 0.2, 0.05, 0.8, 0.78)
    st = _stats.cell_stats([c])
    ref = scipy.stats.bootstrap((c["c1"] - c["c0"],), np.mean, method="percentile", n_resamples=10_000,
                                random_state=4).confidence_interval
    lo, hi = st["ci95"]["accuracy_change_points"]
    assert lo == pytest.approx(100 * ref.low, abs=0.4) and hi == pytest.approx(100 * ref.high, abs=0.4)
    assert st["accuracy_change_points"] == pytest.approx(100 * np.mean(c["c1"] - c["c0"]))
    assert st["violation_reduction"] == pytest.approx(1 - c["v1"].mean() / c["v0"].mean())


def test_intervals_cover_the_true_change_at_about_95_percent():
    """Rows and seeds drawn afresh 150 times: the two-stage interval of the accuracy change and of the
    violation reduction should hold the truth about 95% of the time."""
    rng = np.random.default_rng(5)
    hits_acc = hits_red = 0
    runs = 150
    for _ in range(runs):
        cells = [_sim(rng, 400, 0.20, 0.10, 0.80, 0.78) for _ in range(3)]
        st = _stats.cell_stats(cells, seed=int(rng.integers(1 << 30)))
        lo, hi = st["ci95"]["accuracy_change_points"]
        hits_acc += lo <= -2.0 <= hi
        lo, hi = st["ci95"]["violation_reduction"]
        hits_red += lo <= 0.5 <= hi
    assert 0.85 <= hits_acc / runs <= 0.995 and 0.85 <= hits_red / runs <= 0.995


def test_holm_matches_the_step_down_by_hand():
    assert _stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert _stats.holm([0.2]) == [0.2]
    got = _stats.holm([0.01, float("nan"), 0.04])  # a comparison with nothing to compare is not a hypothesis
    assert got[0] == pytest.approx(0.02) and np.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert _stats.verdict({"violation_reduction": {"difference": float("nan")}}, float("nan")) == "n/a"


def test_targets_say_when_an_entry_has_nothing_to_repair():
    from jaxrepair.suite._report import targets

    def row(entry, method, before, after, drawdown=0.01, degenerate=0):
        return {"entry": entry, "method": method, "violation_before": before, "violation_after": after,
                "drawdown_mean": drawdown, "degenerate_seeds": degenerate}

    got = targets([row("a", "m1", 0.0, 0.0), row("a", "m2", 0.0, 0.0), row("b", "m1", 0.03, 0.0),
                   row("b", "m2", 0.03, 0.0, degenerate=1), row("c", "m1", 0.03, 0.0, drawdown=0.05)], "safety")
    assert got["a"]["met"] is None and "nothing to repair" in got["a"]["why"]
    assert got["b"] == {"met_by": ["m1"], "met": True} and got["c"] == {"met_by": [], "met": False}


def test_replicates_average_only_the_seeds_whose_reduction_is_defined():
    # two violating rows of 40 before, none after: wherever a replicate's rows hold a violation the
    # reduction is 100%; a draw without one has no reduction and must not count as 0%
    rng = np.random.default_rng(3)
    cells = [_cell(np.arange(40) < 2, np.zeros(40), rng.random(40) < 0.8, rng.random(40) < 0.8) for _ in range(3)]
    st = _stats.cell_stats(cells)
    assert st["violation_reduction"] == 1.0 and st["ci95"]["violation_reduction"] == [1.0, 1.0]
    assert st["ci95"]["violation_before"][0] < 0.05 < st["ci95"]["violation_before"][1]


def test_seed_interval_is_the_bootstrap_of_the_seed_mean():
    assert _stats.seed_interval([2.0, 2.0, 2.0]) == [2.0, 2.0]
    v = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    draws = np.random.default_rng(7).integers(0, 5, (_stats.B, 5))
    want = np.percentile(v[draws].mean(1), [2.5, 97.5])
    assert _stats.seed_interval(v, seed=7) == pytest.approx(list(want))


def test_compare_is_paired_and_says_who_wins():
    rng = np.random.default_rng(6)
    base = [_sim(rng, 500, 0.3, 0.3, 0.8, 0.8) for _ in range(5)]
    better = [dict(c, v1=np.where(rng.random(500) < 0.9, 0.0, c["v0"])) for c in base]  # removes ~90% of violations
    same = [dict(c, v1=c["v0"].copy()) for c in base]
    cmp = _stats.compare(better, same)
    assert cmp["violation_reduction"]["difference"] > 0.8 and cmp["violation_reduction"]["ci95"][0] > 0.7
    assert cmp["violation_reduction"]["p"] < 0.01 and cmp["seeds_a_reduces_more"] == 5
    assert _stats.verdict(cmp, cmp["violation_reduction"]["p"]) == "wins"
    tie = _stats.compare(same, same)
    assert tie["violation_reduction"]["difference"] == 0 and tie["violation_reduction"]["p"] == 1.0
    with pytest.raises(ValueError, match="same seeds"):
        _stats.compare(base[:2], base[:3])


# --------------------------------------------------------------------------- splits and outcomes


@pytest.fixture(scope="module")
def german():
    return jr.zoo.load("german-sex")


def test_resplit_keeps_sizes_and_strata_and_never_uses_train_rows(german):
    b = german
    pool = np.concatenate([b.splits["val"]["x"], b.splits["test"]["x"]])
    a1, a2, c = jr.suite.resplit(b, 1), jr.suite.resplit(b, 1), jr.suite.resplit(b, 2)
    for k in ("val", "test"):
        assert abs(len(a1.splits[k]["y"]) - len(b.splits[k]["y"])) <= 4
        np.testing.assert_array_equal(a1.splits[k]["x"], a2.splits[k]["x"])  # seeded
    assert not np.array_equal(a1.splits["test"]["x"], c.splits["test"]["x"])
    both = np.concatenate([a1.splits["val"]["x"], a1.splits["test"]["x"]])
    assert sorted(map(tuple, both)) == sorted(map(tuple, pool))  # the same rows, none from train
    np.testing.assert_array_equal(a1.splits["train"]["x"], b.splits["train"]["x"])
    y_all = np.concatenate([b.splits["val"]["y"], b.splits["test"]["y"]])
    assert np.mean(a1.splits["test"]["y"]) == pytest.approx(np.mean(y_all), abs=0.02)  # stratified


def test_outcomes_give_the_reported_test_figures(german):
    task = jr.repair.from_zoo(german, repair_samples=300)
    o = jr.suite.outcomes(task, german.model)
    rep = task.report(german.model)
    assert _stats.rate(o["v"], o["w"]) == pytest.approx(rep["violation"], abs=1e-6)
    assert np.mean(o["c"]) == pytest.approx(rep["accuracy"], abs=1e-6)
    digits = jr.zoo.load("digits-badnets")
    t2 = jr.repair.from_zoo(digits, repair_samples=300)
    o2 = jr.suite.outcomes(t2, digits.model)
    r2 = t2.report(digits.model)
    assert _stats.rate(o2["v"], o2["w"]) == pytest.approx(r2["violation"], abs=1e-6)  # over non-target images only
    assert o2["w"].sum() < len(o2["w"]) and np.mean(o2["c"]) == pytest.approx(r2["accuracy"], abs=1e-6)
    # the backdoor family repairs the head past its cut: the same rows, the same outcomes
    assert jr.suite.families()["backdoor"].cut == "flatten"
    head, low = jr.repair.lower(digits.model, t2, "flatten")
    o_low = jr.suite.outcomes(low, head)
    for k in ("v", "w", "c"):
        np.testing.assert_array_equal(o_low[k], o2[k])
    acas = jr.zoo.load("acasxu-n3_3-phi2")  # safety: region samples, and fidelity to the original's advisories
    t3 = jr.repair.from_zoo(acas, repair_samples=500)
    o3, r3 = jr.suite.outcomes(t3, acas.model), t3.report(acas.model)
    assert _stats.rate(o3["v"], o3["w"]) == pytest.approx(r3["violation"], abs=1e-9) and np.mean(o3["c"]) == 1.0


# --------------------------------------------------------------------------- running


@pytest.fixture
def quick_methods():
    """Two cheap methods — one that leaves the model as it is, one that fails on a chosen seed — so
    that runs, kills and resumes are tested in seconds."""
    calls = []

    def unchanged(model, task, *, seed=0):
        calls.append(("unchanged", seed))
        return jr.repair.prune(model, task, [])

    def fails_on(model, task, *, seed=0, bad=-1):
        calls.append(("flaky", seed))
        if seed == bad:
            raise RuntimeError("killed")
        return jr.repair.finetune(model, task, steps=10, eval_every=10)

    names = ("test-unchanged", "test-flaky")
    jr.repair.register(jr.repair.Method(names[0], unchanged, ("fairness",), "", "the model as given"))
    jr.repair.register(jr.repair.Method(names[1], fails_on, ("fairness",), "", "fine-tuning that may fail",
                                        options=("bad",)))
    yield names, calls
    for n in names:
        jr.repair.METHODS.pop(n)


def test_run_is_resumable_keeps_finished_cells_and_reports(tmp_path, quick_methods):
    names, calls = quick_methods
    out = tmp_path / "s"
    with pytest.raises(RuntimeError, match="killed"):  # dies on its third cell
        jr.suite.run("fairness", out, methods=list(names), seeds=2, entries=["german-sex"], repair_samples=300,
                     options={"test-flaky": {"bad": 1}}, progress=False)
    st = Store(out / "suite_fairness.sqlite", readonly=True)
    kept = st.records()
    st.close()
    assert len(kept) == 3  # the cells before the failure are stored
    calls.clear()
    res = jr.suite.run("fairness", out, methods=list(names), seeds=2, entries=["german-sex"], repair_samples=300,
                       options={"test-flaky": {"bad": -5}}, progress=False)
    # other options: other cells for the flaky method; the unchanged method's cells are reused
    assert res["ran"] == 2 and sorted(calls) == [("flaky", 0), ("flaky", 1)]
    calls.clear()
    again = jr.suite.run("fairness", out, methods=list(names), seeds=2, entries=["german-sex"], repair_samples=300,
                         options={"test-flaky": {"bad": -5}}, progress=False)
    assert again["ran"] == 0 and calls == []  # a rerun does no work
    board = again["report"]["board"]
    rows = {r["method"]: r for r in board["rows"]}
    assert rows["test-unchanged"]["violation_reduction"] == 0 and rows["test-unchanged"]["seeds"] == 2
    assert rows["test-unchanged"]["p_accuracy_change"] == 1.0 and rows["test-unchanged"]["resplit"]
    doc = json.loads((out / "suite_fairness.json").read_text())
    assert doc["family"] == "fairness" and len(doc["rows"]) == 2
    md = (out / "suite_fairness.md").read_text()
    assert "--option test-flaky:bad=-5 " in md.replace("`", " ")  # the regenerate line names the options
    # the store also holds the flaky method's seed-0 cell of the first run (bad=1): the report alone
    # cannot tell which run to show, and says so
    with pytest.raises(ValueError, match="under more than one setting"):
        jr.suite.report(out / "suite_fairness.sqlite")
    assert "test-flaky" in md and "CARE" in md and (out / "suite_fairness.png").stat().st_size > 10_000


def test_bad_input_is_refused_before_work(tmp_path, capsys):
    out = tmp_path / "none"
    for argv, msg in [(["fairness", "--methods", "nope"], "unknown method 'nope'"),
                      (["fairness", "--methods", "certified"], "does not apply to fairness"),
                      (["fairness", "--entries", "mnist-badnets"], "not in the fairness family"),
                      (["fairness", "--methods", "prune", "--option", "prune:bogus=1"], "takes no option(s) ['bogus']"),
                      (["fairness", "--methods", "prune", "--option", "cf-clp:lam=1"], "options given for 'cf-clp'"),
                      (["fairness", "--methods", "care", "--option", "care:localization=1"], "are the suite's own")]:
        assert main(["suite", *argv, "--out", str(out)]) == 2
        assert msg in capsys.readouterr().err
    for argv, msg in [(["fairness", "--seeds", "0"], "--seeds"), (["vision"], "invalid choice"),
                      (["fairness", "--option", "prune:bogus"], "expected METHOD:NAME=VALUE")]:
        with pytest.raises(SystemExit) as e:  # argparse's own refusal
            main(["suite", *argv, "--out", str(out)])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not out.exists()  # nothing written
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        jr.suite.run("fairness", out, seeds=0)
    with pytest.raises(ValueError, match="repair_samples must be a positive integer"):
        jr.suite.run("fairness", out, repair_samples=2.5)
    with pytest.raises(ValueError, match="plain JSON values"):
        jr.suite.run("fairness", out, methods=["prune"], options={"prune": {"k": object()}})
    assert jr.suite.check_run("fairness", methods=["prune", "prune"], entries=["german-sex", "german-sex"])[1:3] == (
        ["german-sex"], ["prune"])  # each once
    # a store written by another suite (or version) is refused, and left as it was
    other = tmp_path / "other"
    st = Store(other / "suite_fairness.sqlite")
    st.add([{"hash": "x", "config": {"suite": "backdoor", "suite_version": jr.suite.SUITE_VERSION}, "metrics": {},
             "timings": {}, "versions": {}, "created": 0.0}])
    st.close()
    before = (other / "suite_fairness.sqlite").read_bytes()
    assert main(["suite", "fairness", "--methods", "prune", "--entries", "german-sex", "--out", str(other)]) == 2
    assert "holds cells of suite 'backdoor'" in capsys.readouterr().err
    assert (other / "suite_fairness.sqlite").read_bytes() == before
    assert main(["suite", "fairness", "--report-only", "--out", str(tmp_path / "empty")]) == 2
    assert "no suite store to report" in capsys.readouterr().err


def test_methods_command_lists_the_registry(capsys):
    assert main(["methods", "--kind", "fairness"]) == 0
    out = capsys.readouterr().out
    assert "| ace-finetune | " in out and "random-finetune" in out and "| certified |" not in out


def test_a_certifying_method_has_its_proofs_counted(tmp_path):
    import dataclasses

    def proves(model, task, *, seed=0):
        r = jr.repair.prune(model, task, [])
        return dataclasses.replace(r, certificate={"proven": seed == 0, "verdict": "safe" if seed == 0 else "unknown",
                                                   "rounds": [], "certificate_boxes": 0})

    jr.repair.register(jr.repair.Method("test-proves", proves, ("fairness",), "", "a proof on seed 0 only"))
    try:
        res = jr.suite.run("fairness", tmp_path, methods=["test-proves"], seeds=2, entries=["german-sex"],
                           repair_samples=300, progress=False)
    finally:
        jr.repair.METHODS.pop("test-proves")
    (row,) = res["report"]["board"]["rows"]
    assert row["proven_seeds"] == 1
    md = (tmp_path / "suite_fairness.md").read_text()
    assert "proven (seeds)" in md and "| 1/2 |" in md
