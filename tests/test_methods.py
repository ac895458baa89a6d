"""The method registry and the one pipeline: every method by name, clear refusals, a user's method,
and a sweep cell that computes what jr.repair computes with the same options."""

import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import sweep

# What the registry must hold (the list), by name.
EXPECTED = {"care", "ace-pso", "random-pso", "ace-cma_es", "ace-de", "ace-snes", "ace-open_es", "interchange-pso",
            "prune", "finetune-all", "ace-finetune", "random-finetune", "interchange-finetune", "certified", "cf-clp",
            "cf-augment", "irm"}


@pytest.fixture(scope="module")
def german():
    bench = jr.zoo.load("german-sex")
    return bench, jr.repair.from_zoo(bench, repair_samples=400)


def test_registry_holds_every_method_with_its_record():
    assert EXPECTED <= set(jr.repair.METHODS)
    for name, m in jr.repair.METHODS.items():
        assert m.name == name and m.kinds and m.summary
        if m.control is not None:  # a causal localiser's control exists and ranks at random
            ctrl = jr.repair.METHODS[m.control]
            assert ctrl.ranking == "random" and set(m.kinds) <= set(ctrl.kinds)
            assert set(ctrl.options) == set(m.options)  # same k, budget and steps: only the ranking differs
    assert jr.repair.METHODS["ace-finetune"].control == "random-finetune"
    assert jr.repair.METHODS["ace-pso"].control == "random-pso"
    assert "certified" not in jr.repair.methods_for("fairness")
    assert {"cf-clp", "irm"} <= set(jr.repair.methods_for("fairness"))
    assert "cf-clp" not in jr.repair.methods_for("backdoor")
    # a caller's shared localisations go to the methods that rank on them, and to no other
    ace, inter = object(), object()
    assert jr.repair.METHODS["ace-finetune"].shared_localization(ace=ace, interchange=inter) is ace
    assert jr.repair.METHODS["interchange-pso"].shared_localization(ace=ace, interchange=inter) is inter
    for name in ("care", "random-pso", "finetune-all", "cf-clp"):
        assert jr.repair.METHODS[name].shared_localization(ace=ace, interchange=inter) is None


def test_refusals_name_the_problem(german):
    bench, task = german
    with pytest.raises(ValueError, match=r"unknown method 'nope' \(registered: .*ace-finetune"):
        jr.repair.get_method("nope")
    with pytest.raises(ValueError, match="'certified' applies to safety, custom tasks, not 'german-sex' \\(fairness\\)"):
        jr.repair.METHODS["certified"](bench.model, task)
    with pytest.raises(ValueError, match="'prune' takes no option\\(s\\) \\['steps'\\]"):
        jr.repair.METHODS["prune"](bench.model, task, steps=3)
    with pytest.raises(ValueError, match="registered already"):
        jr.repair.register(jr.repair.METHODS["prune"])
    with pytest.raises(ValueError, match="kinds must be some of"):
        jr.repair.Method("x", lambda *a, **k: None, ("vision",), "", "x")


def test_repair_command_refuses_flags_a_registered_method_cannot_take(tmp_path, capsys):
    from jaxrepair.cli import main

    out = tmp_path / "out"
    for argv, msg in [(["--method", "ace-finetune", "--preset", "care"], "--preset cannot be combined"),
                      (["--baseline", "random", "--strategy", "de"], "--strategy cannot be combined"),
                      (["--method", "prune", "--pareto", "0.2,0.5"], "'prune' makes one repair and has none"),
                      (["--strategy", "nsga2", "--objectives", "violation,fairness"], "unknown objective"),
                      (["--strategy", "nsga3", "--population", "7"], "even population"),
                      (["--method", "prune", "--baseline", "random"], "choose one"),
                      (["--method", "nope"], "unknown method 'nope'"),
                      (["--method", "prune", "--generations", "3"], "takes none of the options ['generations']")]:
        assert main(["repair", "german-sex", *argv, "--out", str(out)]) == 2
        assert msg in capsys.readouterr().err
    assert not out.exists()  # refused before any work


def test_methods_run_by_name_and_record_it(german):
    bench, task = german
    r = jr.repair.METHODS["finetune-all"](bench.model, task, seed=1, steps=20, eval_every=10)
    assert r.method == "finetune-all" and r.config["registry_method"] == "finetune-all" and r.config["steps"] == 20
    ref = jr.repair.finetune(bench.model, task, a=jr.repair.PRESETS["fairness"].a_grad,
                             max_drop=jr.repair.PRESETS["fairness"].max_drop, steps=20, eval_every=10)
    assert r.after["violation"] == ref.after["violation"] and r.after["accuracy"] == ref.after["accuracy"]
    # ace- and random-ranked localised fine-tuning: the same k grid and steps, other units
    loc = jr.repair.localize(bench.model, task)
    a = jr.repair.METHODS["ace-finetune"](bench.model, task, seed=0, localization=loc, k_values=(5,), steps=20)
    b = jr.repair.METHODS["random-finetune"](bench.model, task, seed=0, k_values=(5,), steps=20)
    assert [(n.site, n.unit) for n in a.selected] == [(n.site, n.unit) for n in loc.ranking()[:5]]
    assert len(b.selected) == 5 and a.config["steps"] == b.config["steps"] == 20
    assert {(n.site, n.unit) for n in a.selected} != {(n.site, n.unit) for n in b.selected}


def test_a_users_method_registers_and_runs(german):
    bench, task = german
    calls = []

    def unchanged(model, task, *, seed=0, note="x"):
        calls.append((seed, note))
        return jr.repair.prune(model, task, [])

    jr.repair.register(jr.repair.Method("test-unchanged", unchanged, ("fairness",), "", "returns the model",
                                        options=("note",)))
    try:
        r = jr.repair.METHODS["test-unchanged"](bench.model, task, seed=4, note="y")
        assert calls == [(4, "y")] and r.method == "test-unchanged"
        assert r.after["violation"] == r.before["violation"]
        assert "test-unchanged" in jr.repair.methods_for(task)
    finally:
        jr.repair.METHODS.pop("test-unchanged")


def test_a_sweep_cell_equals_jr_repair_with_the_same_options(tmp_path, german):
    bench, _ = german
    cfg = tmp_path / "s.toml"
    cfg.write_text('[grid]\nentry = ["german-sex"]\nstrategy = ["pso"]\nk = [4]\na = [0.3]\nseed = [2]\n'
                   '[settings]\ngenerations = 6\npopulation = 8\nrepair_samples = 400\n')
    sweep.run(cfg, progress=False)
    store = sweep.Store(tmp_path / "s.sqlite", readonly=True)
    (rec,) = store.records()
    store.close()
    task = jr.repair.from_zoo(bench, repair_samples=400)
    r = jr.repair(bench.model, task, strategy="pso", k=4, a=0.3, seed=2, generations=6, population_size=8)
    m = rec["metrics"]
    assert [tuple(u) for u in m["selected"]] == [(n.site, n.unit) for n in r.selected]
    assert m["select_fitness"] == pytest.approx(r.search["select_fitness"], abs=1e-6)
    assert m["violation_after"] == pytest.approx(r.after["violation"], abs=1e-9)
    assert m["accuracy_after"] == pytest.approx(r.after["accuracy"], abs=1e-9)
    # the sweep used jr.repair's defaults: the preset's budget and score
    assert rec["config"]["max_drop"] == "preset" and r.config["max_drop"] == jr.repair.PRESETS["fairness"].max_drop


def test_plan_is_the_pipeline_of_repair_and_pareto(german):
    bench, task = german
    pl = jr.repair.plan(bench.model, task, k=3, k_max=6, generations=4, population_size=6)
    assert len(pl.chosen) == 3 and len(pl.ranking) >= 6 and len(pl.problem.slots.site) == 6
    out = pl.search(seeds=[0, 1], a=[0.2, 0.4], selections=[pl.ranking[:3], pl.ranking[:6]])
    r0, r1 = pl.result(out, 0, seed=0, a=0.2), pl.result(out, 1, seed=1, a=0.4, chosen=pl.ranking[:6])
    assert r0.config["k"] == 3 and r1.config["k"] == 6 and r1.config["a"] == 0.4
    assert np.isfinite(r0.search["select_fitness"]) and r0.method == "ace-pso"
    with pytest.raises(ValueError, match="k_max=2 is smaller than k=3"):
        jr.repair.plan(bench.model, task, k=3, k_max=2)
    with pytest.raises(ValueError, match="selection must be 'random' or a list"):
        jr.repair.plan(bench.model, task, selection="best")


def test_one_record_per_task_kind():
    """A zoo kind has its zoo record, a repair task builder, a preset, and methods in the registry."""
    kinds = set(jr.zoo.KINDS)
    assert kinds == set(jr.repair.TASK_BUILDERS) and kinds <= set(jr.repair.PRESETS)
    assert kinds <= set(jr.repair.KINDS)
    for name, k in jr.zoo.KINDS.items():
        assert k.name == name and k.preset in jr.repair.PRESETS and jr.repair.methods_for(name)
    for name, e in jr.zoo.ENTRIES.items():
        assert jr.zoo.KINDS[e.kind].describe(e)
    with pytest.raises(ValueError, match="has kind 'vision', which has no repair task builder"):
        import dataclasses

        bench = jr.zoo.load("german-sex")
        jr.repair.from_zoo(dataclasses.replace(bench, entry=dataclasses.replace(bench.entry, kind="vision")))
