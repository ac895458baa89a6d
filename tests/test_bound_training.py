"""Repair on verifier bounds (``jr.repair.bound_finetune``): its bounds are the verifier's CROWN, it
closes the boxes branch and bound leaves open so that the verifier proves the repair, one compiled
program serves any number of boxes, and bad input is refused."""

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import verify as V
from jaxrepair.repair import _bound_training as B
from tests import reference as R
from tests.test_verify import _box_task, _recheck


def _violated(seed=3):
    """A [2, 8, 2] net and a property it violates (y0 − y1 reaches the threshold in part of the unit box)."""
    model = jr.models.mlp([2, 8, 2], key=jax.random.key(seed))
    chain = V.affine_chain(model)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    c = np.array([1.0, -1.0])
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    t = exact - 0.3 * abs(exact) - 0.05
    return model, jr.properties.Vnnlib(np.stack([lo, hi], 1)[None], ((-c[None], np.array([-t])),))


def test_clause_bounds_are_the_verifiers_crown_per_clause():
    model = jr.models.mlp([3, 6, 6, 4], key=jax.random.key(1))
    chain = V.affine_chain(model)
    rng = np.random.default_rng(0)
    clauses = [(rng.normal(size=(2, 4)), rng.normal(size=2)), (rng.normal(size=(3, 4)), rng.normal(size=3))]
    rows = np.concatenate([C for C, _ in clauses]).astype(np.float32)
    rhs = np.concatenate([d for _, d in clauses]).astype(np.float32)
    owner = np.array([[True, True, False, False, False], [False, False, True, True, True]])
    centre = rng.uniform(-1, 1, (16, 3))
    lo, hi = (centre - 0.3).astype(np.float32), (centre + 0.3).astype(np.float32)
    got = np.asarray(B.clause_bounds(model.graph, model.params(), lo, hi, rows, rhs, owner))
    for b in range(16):  # the chain CROWN of jr.verify, box by box, best row of each clause
        lb = np.asarray(V.crown(chain, lo[b], hi[b], rows, rhs))
        np.testing.assert_allclose(got[b], [lb[:2].max(), lb[2:].max()], rtol=1e-4, atol=1e-4)
        y = np.asarray(model(lo[b] + rng.uniform(size=(500, 3)).astype(np.float32) * (hi[b] - lo[b])))
        m = y @ rows.T - rhs  # sound: below every sampled value of the best row
        assert np.all(got[b][0] <= m[:, :2].max(1) + 1e-4) and np.all(got[b][1] <= m[:, 2:].max(1) + 1e-4)


def test_bound_training_closes_the_open_boxes_and_the_verifier_proves_it(capsys):
    model, prop = _violated()
    assert V.verify(model, prop, timeout=20).verdict == "unsafe"
    v = V.verify(model, prop, timeout=20, falsifier=False, max_boxes=2048)
    assert v.verdict == "unknown" and v.boxes >= 2048 and v.counterexample is None  # no falsifier: never unsafe
    lo, hi = v.open_boxes
    assert len(lo) > 100 and np.all(lo <= hi)
    task, _ = _box_task(model, prop)
    r = jr.repair.bound_finetune(model, task, v.open_boxes, steps=100, eval_every=10, progress=True)
    hist = r.search["history"]
    assert "[bound_finetune] step 10/100: bound hinge" in capsys.readouterr().err  # progress per block
    assert hist["closed"][-1] == 1.0 and hist["closed"][0] < 1.0 and r.search["steps"] < 100  # stopped once closed
    again = V.verify(r.model, prop, timeout=20)
    assert again.verdict == "safe"
    # every certificate box re-checks in float64 numpy on the trained network, and sampling agrees
    chain = V.affine_chain(r.model)
    (C, d), = prop.clauses
    assert all(_recheck(chain, a, b, C, d, np.zeros(1, int), s) for a, b, _, s in again.certificate)
    x = np.random.default_rng(1).uniform(-1, 1, (20000, 2)).astype(np.float32)
    assert np.all(np.asarray(r.model(x)) @ (-C[0]) < -d[0])
    assert r.after["accuracy"] > 0.9 and r.method == "bound-finetune"


def test_any_number_of_boxes_of_one_size_class_runs_one_program():
    model, prop = _violated()
    task, _ = _box_task(model, prop, n=50)
    rng = np.random.default_rng(0)

    def boxes(m):
        c = rng.uniform(-1, 1, (m, 2)).astype(np.float32)
        return c - 0.05, c + 0.05

    jr.repair.bound_finetune(model, task, boxes(300), steps=10, seed=0)
    size = B._bound_block._cache_size()
    r = jr.repair.bound_finetune(model, task, boxes(400), steps=10, seed=5)  # other boxes, count and seed
    assert B._bound_block._cache_size() == size and r.search["steps"] == 10 and r.config["boxes"] == 400


def test_the_same_seed_gives_the_same_network():
    model, prop = _violated()
    task, _ = _box_task(model, prop, n=50)
    c = np.random.default_rng(0).uniform(-1, 1, (300, 2)).astype(np.float32)
    runs = [jr.repair.bound_finetune(model, task, (c - 0.05, c + 0.05), steps=10, seed=s) for s in (2, 2, 3)]
    p = [jax.tree.leaves(r.model.params()) for r in runs]
    assert all(np.array_equal(x, y) for x, y in zip(p[0], p[1]))
    assert not all(np.array_equal(x, y) for x, y in zip(p[0], p[2]))


def test_bad_input_is_refused_before_work():
    model, prop = _violated()
    task, _ = _box_task(model, prop, n=50)
    lo = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"boxes must be \(lo, hi\), each \[m >= 1, 2\]"):
        jr.repair.bound_finetune(model, task, (np.zeros((4, 3)), np.ones((4, 3))))
    with pytest.raises(ValueError, match="boxes must be finite"):
        jr.repair.bound_finetune(model, task, (lo - np.inf, lo))
    with pytest.raises(ValueError, match="lower corners lie above"):
        jr.repair.bound_finetune(model, task, (lo + 1, lo))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        jr.repair.bound_finetune(model, task, (lo, lo + 1), steps=0)
    with pytest.raises(ValueError, match="falsifier_only=True asks for the falsifier alone"):
        V.verify(model, prop, falsifier_only=True, falsifier=False)
    with pytest.raises(ValueError, match="max_boxes must be a positive integer"):
        V.verify(model, prop, max_boxes=0)
    with pytest.raises(ValueError, match="bound_steps must be a non-negative integer"):
        jr.repair.certified_repair(model, task, bound_steps=-1)


def test_cli_certify_bound_steps_is_checked(capsys):
    from jaxrepair import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["repair", "acasxu-n2_1-phi2", "--certify", "--certify-bound-steps", "-3"])
    assert e.value.code == 2 and "--certify-bound-steps: must be in 0..100000, got -3" in capsys.readouterr().err
