"""DAG variants for SCM sensitivity analysis (`jr.causal.edit_dag`): counterfactuals of linear SCMs
fitted on edited DAGs against closed forms with hand-computed least-squares coefficients."""

import numpy as np
import pytest

import jaxrepair as jr

COLUMNS = ["H", "A", "B", "C"]
# H confounds A, B and C; A -> B -> C and A -> C
TRUE_DAG = {"H": [], "A": ["H"], "B": ["A", "H"], "C": ["A", "B", "H"]}


def _data(n=3000):
    rng = np.random.default_rng(0)
    h = rng.normal(size=n)
    a = (h + rng.normal(size=n) > 0).astype(np.float64)
    b = 1.5 * a + 1.0 * h + rng.normal(size=n)
    c = -0.7 * a + 2.0 * b + 0.8 * h + 0.5 + rng.normal(size=n)
    return np.stack([h, a, b, c], 1)


def _ols(x, target, regressors):
    """Least-squares slopes of ``target`` on ``regressors`` (+ intercept), by the normal equations."""
    idx = {c: i for i, c in enumerate(COLUMNS)}
    z = np.concatenate([x[:, [idx[r] for r in regressors]], np.ones((len(x), 1))], 1)
    return np.linalg.solve(z.T @ z, z.T @ x[:, idx[target]])[:-1]


def test_edit_dag_edits_and_keeps_its_input():
    dag = {c: list(p) for c, p in TRUE_DAG.items()}
    assert jr.causal.edit_dag(dag) == TRUE_DAG
    assert jr.causal.edit_dag(dag, drop=[("A", "C")]) == {"H": [], "A": ["H"], "B": ["A", "H"], "C": ["B", "H"]}
    assert jr.causal.edit_dag(dag, reverse=[("B", "C")]) == {"H": [], "A": ["H"], "B": ["A", "H", "C"], "C": ["A", "H"]}
    assert jr.causal.edit_dag(dag, hide=["H"]) == {"H": [], "A": [], "B": ["A"], "C": ["A", "B"]}
    assert jr.causal.edit_dag({"B": ["A"]}) == {"B": ["A"], "A": []}  # a parent without an entry becomes a root
    assert dag == TRUE_DAG  # not modified
    with pytest.raises(ValueError, match="cannot drop the edge B -> A: it is not in the DAG"):
        jr.causal.edit_dag(dag, drop=[("B", "A")])
    with pytest.raises(ValueError, match="cycle"):  # A -> B -> C plus C -> A
        jr.causal.edit_dag(dag, reverse=[("A", "C")])
    with pytest.raises(ValueError, match="unknown columns \\['Z'\\]"):
        jr.causal.edit_dag(dag, hide=["Z"])
    with pytest.raises(ValueError, match="pairs"):
        jr.causal.edit_dag(dag, drop=["AC"])


def test_counterfactuals_under_edited_dags_equal_the_closed_form():
    x = _data()
    h, a, b, c = x.T
    a1 = 1 - a
    d = a1 - a

    def cf(dag):
        scm = jr.causal.SCM.fit(x, COLUMNS, dag, categorical=["A"])
        return np.asarray(scm.counterfactual(x, {"A": a1}), np.float64)

    # dropped A -> C: C moves only through B; C is refitted on (B, H)
    out = cf(jr.causal.edit_dag(TRUE_DAG, drop=[("A", "C")]))
    w_ab, _ = _ols(x, "B", ["A", "H"])
    w_bc, _ = _ols(x, "C", ["B", "H"])
    b_cf = b + w_ab * d
    np.testing.assert_allclose(out[:, 2], b_cf, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[:, 3], c + w_bc * (b_cf - b), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[:, 0], h, atol=1e-6)  # H is not a descendant of A
    # reversed B -> C: C is refitted on (A, H) and moves first; B follows with C as a parent
    out = cf(jr.causal.edit_dag(TRUE_DAG, reverse=[("B", "C")]))
    w_ac, _ = _ols(x, "C", ["A", "H"])
    w_ab, _, w_cb = _ols(x, "B", ["A", "H", "C"])
    c_cf = c + w_ac * d
    np.testing.assert_allclose(out[:, 3], c_cf, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[:, 2], b + w_ab * d + w_cb * (c_cf - c), rtol=1e-4, atol=1e-4)
    # hidden H: B is regressed on A alone, so its A-coefficient carries the omitted-variable bias
    # cov(A, B) / var(A) (H raises both A and B); H keeps its observed value
    out = cf(jr.causal.edit_dag(TRUE_DAG, hide=["H"]))
    w_ab_hidden = np.cov(a, b)[0, 1] / np.var(a, ddof=1)
    assert _ols(x, "B", ["A"])[0] == pytest.approx(w_ab_hidden, rel=1e-9)
    assert w_ab_hidden > 1.5 + 0.5  # biased upwards from the true 1.5 by the confounder
    w_ac, w_bc = _ols(x, "C", ["A", "B"])
    b_cf = b + w_ab_hidden * d
    np.testing.assert_allclose(out[:, 2], b_cf, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[:, 3], c + w_ac * d + w_bc * (b_cf - b), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[:, 0], h, atol=1e-6)
    # the true DAG recovers the data-generating coefficients
    w_ab, _ = _ols(x, "B", ["A", "H"])
    assert w_ab == pytest.approx(1.5, abs=0.1)


def test_counterfactual_fairness_per_example_matches_a_row_loop(key):
    """The per-row indicators: a row counts when the decision on its counterfactual differs."""
    x = _data(120).astype(np.float32)
    model = jr.models.mlp([4, 3, 2], key=key)
    dag = jr.causal.edit_dag(TRUE_DAG, hide=["H"])
    scm = jr.causal.SCM.fit(x, COLUMNS, dag, categorical=["A"])
    res = jr.causal.counterfactual_fairness(model, scm, x, "A", [0.0, 1.0], per_example=True)
    apply, params = jr.functional(model)
    ref = []
    for row in x:  # binary A: the only other value is 1 - a
        cf_row = np.asarray(scm.counterfactual(row[None], {"A": 1 - row[1]}))
        ref.append(int(np.argmax(apply(params, row[None]))) != int(np.argmax(apply(params, cf_row))))
    assert 0 < sum(ref) < len(ref)  # some rows change, some do not
    np.testing.assert_array_equal(res["counterfactual_changed"], ref)
    assert res["counterfactual_violation"] == pytest.approx(np.mean(ref))
    assert "counterfactual_changed" not in jr.causal.counterfactual_fairness(model, scm, x, "A", [0.0, 1.0])
