import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import properties as P


@pytest.mark.parametrize(
    "name,features,counts,sensitive",
    [
        ("census", 13, {"train": 26049, "val": 6512, "test": 16281}, {"age": 0, "race": 7, "sex": 8}),
        ("bank", 16, {"train": 31648, "val": 6782, "test": 6782}, {"age": 0}),  # bank-full.csv has 45,212 rows
        ("german", 20, {"train": 700, "val": 150, "test": 150}, {"sex": 8, "age": 12}),
        ("compas", 8, {"train": 4320, "val": 926, "test": 926}, {"sex": 0, "race": 2}),
    ],
)
def test_tabular_shapes_counts_and_sensitive_columns(name, features, counts, sensitive):
    ds = jr.data.load_tabular(name)
    assert ds.num_features == features and len(ds.columns) == features
    assert {k: len(v.y) for k, v in ds.splits.items()} == counts
    assert ds.sensitive == sensitive
    for s in ds.splits.values():
        assert s.x.shape == (len(s.y), features) and s.x.dtype == np.float32 and np.all(np.isfinite(s.x))
        assert set(np.unique(s.y)) <= {0, 1}
    if "age" in sensitive:
        assert set(ds.sensitive_values("age")) <= set(range(1, 10))
    if "sex" in sensitive:
        assert list(ds.sensitive_values("sex")) == [0, 1]
    assert "sensitive" in ds.describe()


def test_census_codes_follow_documented_vocabulary():
    ds = jr.data.load_tabular("census")
    assert ds.categories["sex"] == ["Female", "Male"]
    assert ds.categories["race"] == ["Amer-Indian-Eskimo", "Asian-Pac-Islander", "Black", "Other", "White"]
    # adult.test's first row: 25, Private, ..., Black, Male -> age bucket 2, race 2, sex 1
    row = ds.splits["test"].x[0]
    assert (row[0], row[7], row[8], row[3]) == (2, 2, 1, 7)
    np.testing.assert_array_equal(jr.data.age_bucket([9, 10, 19, 45, 90, 99]), [1, 1, 1, 4, 9, 9])


def test_sensitive_flip_changes_only_that_attribute():
    ds = jr.data.load_tabular("german")
    x = ds.splits["test"].x
    eff = jr.causal.Fairness.make(8, [0, 1])
    cf = np.asarray(eff.counterfactuals(jnp.asarray(x)))
    assert cf.shape == (2, *x.shape)
    others = np.delete(np.arange(20), 8)
    for v in range(2):
        np.testing.assert_array_equal(cf[v][:, others], x[:, others])
        assert np.all(cf[v][:, 8] == v)


@pytest.fixture(scope="module")
def tiny():
    model = jr.models.mlp([4, 6, 2], key=jax.random.key(3))
    apply, params = jr.functional(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    x[:, 1] = rng.integers(0, 3, 300)
    y = rng.integers(0, 2, 300)
    return apply, params, {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def test_individual_fairness_matches_loop(tiny):
    apply, params, batch = tiny
    prop = P.IndividualFairness(1, (0.0, 1.0, 2.0))
    got = np.asarray(prop(apply, params, batch))
    x = np.asarray(batch["x"])
    pred = lambda z: np.asarray(apply(params, z)).argmax(-1)  # noqa: E731
    want = np.zeros(len(x))
    for i in range(len(x)):
        for v in (0.0, 1.0, 2.0):
            z = x[i : i + 1].copy()
            z[0, 1] = v
            want[i] = max(want[i], float(pred(z)[0] != pred(x[i : i + 1])[0]))
    np.testing.assert_array_equal(got, want)
    assert 0 < want.mean() < 1
    r = P.sampled_rate(prop, apply, params, batch["x"], key=jax.random.key(0), num_samples=2000)
    r2 = P.sampled_rate(prop, apply, params, batch["x"], key=jax.random.key(0), num_samples=2000)
    assert r == r2 and r["ci95"][0] <= r["rate"] <= r["ci95"][1]
    assert r["rate"] == pytest.approx(want.mean()) and r["num_rows"] == len(x)  # a finite pool: exact rate
    # the interval reflects the pool's size (a numpy bootstrap of the same rows), not 2000 independent draws
    rng = np.random.default_rng(1)
    boot = want[rng.integers(0, len(want), size=(4000, len(want)))].mean(axis=1)
    ref = np.percentile(boot, [2.5, 97.5])
    np.testing.assert_allclose(r["ci95"], ref, atol=0.03)
    assert r["ci95"][1] - r["ci95"][0] > P.wilson_interval(want.sum() * 2000 / len(want), 2000)[1] - \
        P.wilson_interval(want.sum() * 2000 / len(want), 2000)[0]


def test_group_metrics_and_accuracy_match_numpy(tiny):
    apply, params, batch = tiny
    x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
    pred = np.asarray(apply(params, batch["x"])).argmax(-1)
    g = x[:, 1]
    dp = [np.mean(pred[g == v] == 1) for v in (0, 1, 2)]
    assert P.demographic_parity_difference(apply, params, batch, 1) == pytest.approx(max(dp) - min(dp), abs=1e-6)
    eo = max(max(r) - min(r) for r in ([np.mean(pred[(g == v) & (y == l)] == 1) for v in (0, 1, 2)] for l in (0, 1)))
    assert P.equalized_odds_difference(apply, params, batch, 1) == pytest.approx(eo, abs=1e-6)
    assert float(P.accuracy(apply, params, batch)) == pytest.approx(np.mean(pred == y), abs=1e-6)
    c = P.combine((0.7, P.IndividualFairness(1, (0.0, 1.0, 2.0))), (0.3, P.Misclassification()))
    np.testing.assert_allclose(
        c(apply, params, batch),
        0.7 * P.IndividualFairness(1, (0.0, 1.0, 2.0))(apply, params, batch) + 0.3 * (pred != y),
        rtol=1e-6,
    )


def test_wilson_interval_known_value():
    lo, hi = P.wilson_interval(10, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.0552, 0.1744)


def test_zoo_build_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path))
    a = jr.zoo.build("german-sex", epochs=2)
    b = jr.zoo.build("german-sex", epochs=2)
    for pa, pb in zip(jax.tree.leaves(a.model.params()), jax.tree.leaves(b.model.params())):
        np.testing.assert_array_equal(pa, pb)
    assert a.metrics == b.metrics
    assert 0.5 < a.metrics["test_accuracy"] <= 1.0
    assert a.model.meta["zoo"]["dataset"]["splits"] == {"train": 700, "val": 150, "test": 150}
    with pytest.raises(ValueError, match="unknown zoo entry"):
        jr.zoo.build("census-height")


def test_cli_localize_on_a_model_file(tmp_path, capsys):
    from jaxrepair import cli

    model = jr.models.mlp([5, 6, 4, 2], key=jax.random.key(1))
    jr.save(model, tmp_path / "m.npz")
    x = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    rc = cli.main(["localize", str(tmp_path / "m.npz"), "--data", str(tmp_path / "d.npz"), "--effect", "target:1",
                   "--num-values", "4", "--top", "3", "--out", str(tmp_path / "out")])
    assert rc == 0
    (run,) = list((tmp_path / "out").iterdir())
    rec = json.loads((run / "localize.json").read_text())
    loc = jr.causal.ace(model, x, jr.causal.TargetOutput(1), num_values=4)
    want = [[n.site, n.unit] for n in loc.top(3)]
    assert [[n["site"], n["unit"]] for n in rec["localization"]["top"]["interventional_change"][:3]] == want
    assert (run / "localize.md").exists() and (run / "scores.png").stat().st_size > 1000
    assert cli.main(["localize", str(tmp_path / "m.npz"), "--data", str(tmp_path / "d.npz"),
                     "--effect", "target:1", "--sites", "nope", "--out", str(tmp_path / "o2")]) == 2
    assert "unknown site" in capsys.readouterr().err
