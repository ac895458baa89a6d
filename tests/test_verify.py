"""Verification: bounds contain every sampled output, CROWN is never looser than intervals and
encloses the exact maximum (a MILP), verdicts agree with VNN-COMP, certificates re-check in numpy."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import verify as V
from jaxrepair.models import Graph, Network, Node
from tests import reference as R

VNN = Path(__file__).parent / "fixtures" / "vnncomp"
_graph_crown = jax.jit(V.graph_crown, static_argnums=0)  # one compiled program per graph, shared by the tests
_graph_interval = jax.jit(V.graph_interval, static_argnums=0)


def _small_cnn(key):
    k = jax.random.split(key, 3)
    nodes = (Node.make("c1", "conv2d", "input", strides=(1, 1), padding="SAME"), Node.make("r1", "relu", "c1"),
             Node.make("p", "avgpool", "r1", window=(2, 2), strides=(2, 2), padding="VALID"),
             Node.make("f", "flatten", "p"), Node.make("d1", "dense", "f"), Node.make("r2", "relu", "d1"),
             Node.make("out", "dense", "r2"))
    params = {"c1": {"kernel": jax.random.normal(k[0], (3, 3, 1, 2)) * 0.5, "bias": jnp.full(2, 0.1)},
              "d1": {"kernel": jax.random.normal(k[1], (8, 6)) * 0.5, "bias": jnp.zeros(6)},
              "out": {"kernel": jax.random.normal(k[2], (6, 3)), "bias": jnp.zeros(3)}}
    return Network(Graph(nodes, (4, 4, 1), "out"), params)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_bounds_contain_every_sampled_output_and_crown_beats_intervals(kind):
    key = jax.random.key(1)
    model = jr.models.mlp([4, 8, 8, 3], key=key) if kind == "mlp" else _small_cnn(key)
    chain = V.affine_chain(model)
    n_in = chain.weights[0].shape[1]
    rng = np.random.default_rng(0)
    eye = np.eye(3)
    for trial in range(4):
        c = rng.normal(size=n_in).astype(np.float32)
        w = rng.uniform(0.05, 0.6, n_in).astype(np.float32)
        lo, hi = c - w, c + w
        x = (lo + rng.uniform(size=(2000, n_in)) * (hi - lo)).astype(np.float32)
        y = np.asarray(model(x.reshape(-1, *model.input_shape)))
        np.testing.assert_allclose(np.asarray(V.forward(chain, x)), y, atol=1e-4)
        ilo, ihi = (np.asarray(v) for v in V.interval(chain, jnp.asarray(lo), jnp.asarray(hi)))
        assert np.all(y >= ilo - 1e-4) and np.all(y <= ihi + 1e-4)
        C = np.concatenate([eye, -eye])
        cl = np.asarray(V.crown(chain, jnp.asarray(lo), jnp.asarray(hi), C, np.zeros(6)))
        assert np.all(cl[:3, None] <= y.T + 1e-4) and np.all(-cl[3:, None] >= y.T - 1e-4)  # sound
        assert np.all(cl[:3] >= ilo - 1e-5) and np.all(-cl[3:] <= ihi + 1e-5)  # never looser
        ref = R.crown_lower(chain.weights, chain.biases, lo, hi, C, np.zeros(6))  # independent numpy CROWN
        np.testing.assert_allclose(cl, np.maximum(ref, np.concatenate([ilo, -ihi])), rtol=1e-4, atol=1e-4)


def test_crown_encloses_the_milp_maximum_on_tiny_relu_nets():
    pytest.importorskip("scipy")
    for seed in range(3):
        model = jr.models.mlp([3, 6, 5, 2], key=jax.random.key(seed))
        chain = V.affine_chain(model)
        lo, hi = np.full(3, -1.0, np.float32), np.full(3, 1.0, np.float32)
        for c in (np.array([1.0, -1.0]), np.array([0.0, 1.0])):
            exact, xstar = R.milp_max(chain.weights, chain.biases, lo, hi, c)
            got = float(np.asarray(model(xstar[None].astype(np.float32)))[0] @ c)
            assert got == pytest.approx(exact, abs=1e-4)  # the MILP's maximiser attains it
            upper = -float(np.asarray(V.crown(chain, jnp.asarray(lo), jnp.asarray(hi), -c[None], np.zeros(1)))[0])
            assert upper >= exact - 1e-4
            g_upper = -float(np.asarray(_graph_crown(model.graph, model.params(), lo, hi, -c[None], np.zeros(1)))[0])
            assert g_upper >= exact - 1e-4 and g_upper == pytest.approx(upper, abs=1e-4)  # the DAG pass, too
            # the verdict matches the exact answer: "c·y >= exact - 0.01" is reachable, "c·y >= exact + 0.01" is not
            for t, want in ((exact - 0.01, "unsafe"), (exact + 0.01, "safe")):
                prop = jr.properties.Vnnlib(np.stack([lo, hi], 1)[None].astype(np.float64), ((-c[None], np.array([-t])),))
                v = V.verify(model, prop, timeout=30)
                assert v.verdict == want, (seed, c, t, v.verdict)
                if want == "unsafe":
                    assert float(np.asarray(model(v.counterexample[None].astype(np.float32)))[0] @ c) >= t - 1e-5
                else:  # the certificate re-checks in numpy: every box closed by an independent bound
                    for blo, bhi, _, slopes in v.certificate:
                        assert _recheck(chain, blo, bhi, -c[None], np.array([-t]), np.zeros(1, int), slopes)


@pytest.mark.parametrize("net, prop, want", [("1_1", 1, "safe"), ("1_1", 4, "safe"), ("1_9", 1, "safe"),
                                             ("1_9", 3, "unsafe"), ("1_9", 4, "unsafe")])
def test_verdicts_on_vnncomp_instances(net, prop, want):
    model = jr.convert.from_onnx(VNN / f"ACASXU_run2a_{net}_batch_2000.onnx")
    p = jr.properties.from_vnnlib(VNN / f"prop_{prop}.vnnlib")
    v = V.verify(model, p, timeout=120)
    assert v.verdict == want  # the published answers (a-b-CROWN: N1,1 p1/p4 and N1,9 p1 UNSAT; N1,9 p3/p4 SAT)
    chain = V.affine_chain(model)
    if want == "unsafe":
        x = v.counterexample.astype(np.float32)
        assert np.all(np.asarray(p.in_boxes(x[None])))
        assert float(np.asarray(p.margin(model(x.reshape(1, 1, 1, 5)).reshape(1, -1)))[0]) >= 0
    else:
        assert v.certificate
        rows = np.concatenate([C for C, _ in p.clauses])
        rhs = np.concatenate([d for _, d in p.clauses])
        owner = np.concatenate([np.full(len(d), k) for k, (_, d) in enumerate(p.clauses)])
        # cover: the closed boxes tile the property's box (their volumes add up to it)
        vol = sum(float(np.prod(bhi - blo)) for blo, bhi, _, _ in v.certificate)
        assert vol == pytest.approx(float(np.prod(p.boxes[0, :, 1] - p.boxes[0, :, 0])), rel=1e-4)
        by_alpha = [x for x in v.certificate if x[3] is not None]  # closed by α-CROWN: the first 30 re-checked too
        assert by_alpha or net != "1_1" or prop != 4  # (N1,1 p4 needs α-CROWN on some boxes)
        for blo, bhi, _, slopes in [x for x in v.certificate if x[3] is None][:200] + by_alpha[:30]:
            assert _recheck(chain, blo, bhi, rows, rhs, owner, slopes)


def crown_lower_alpha(weights, biases, lo, hi, C, d, alphas):
    """Independent float64 α-CROWN bound for given slopes: ``R.crown_lower``'s intermediate bounds, then
    the final back-substitution with the line below each unstable ReLU of slope ``alphas[layer][row]``."""
    weights = [np.asarray(w, np.float64) for w in weights]
    biases = [np.asarray(b, np.float64) for b in biases]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    pre = []
    for k in range(len(weights) - 1):  # pre-activation bounds of layer k: the reference on the truncated chain
        if k == 0:  # affine in the input: its interval is exact
            mid, rad = weights[0] @ ((hi + lo) / 2) + biases[0], np.abs(weights[0]) @ ((hi - lo) / 2)
            pre.append((mid - rad, mid + rad))
            continue
        eye = np.eye(weights[k].shape[0])
        low = R.crown_lower(weights[: k + 1], biases[: k + 1], lo, hi, eye, np.zeros(len(eye)))
        up = -R.crown_lower(weights[: k + 1], biases[: k + 1], lo, hi, -eye, np.zeros(len(eye)))
        pre.append((low, up))
    return np.array([R.back_substitute(weights, biases, len(weights) - 1, c_row, -d_row, pre, lo, hi, [a[r] for a in alphas])
                     for r, (c_row, d_row) in enumerate(zip(np.asarray(C, np.float64), np.asarray(d, np.float64)))])


def _recheck(chain, lo, hi, rows, rhs, owner, slopes):
    """A certificate box re-checked in float64 numpy: CROWN ∨ intervals close every clause, or, where
    α-CROWN closed it, the recorded rows with the recorded slopes do."""
    if slopes is None:
        ilo, ihi = R_interval(chain, lo, hi)
        best = np.maximum(R.crown_lower(chain.weights, chain.biases, lo, hi, rows, rhs),
                          np.where(rows >= 0, rows * ilo, rows * ihi).sum(-1) - rhs)
        return all(np.any(best[owner == k] > -1e-5) for k in np.unique(owner))
    picked = slopes["rows"]
    assert sorted(np.unique(owner[picked])) == sorted(np.unique(owner))  # one row for every clause
    b = crown_lower_alpha(chain.weights, chain.biases, lo, hi, rows[picked], rhs[picked], slopes["alphas"])
    return bool(np.all(b > -1e-5))


def R_interval(chain, lo, hi):
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    for i, (w, b) in enumerate(zip(chain.weights, chain.biases)):
        c, r = w @ ((hi + lo) / 2) + b, np.abs(w) @ ((hi - lo) / 2)
        lo, hi = c - r, c + r
        if i < len(chain.weights) - 1:
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return lo, hi


def test_unsupported_graphs_are_refused():
    cnn = jr.models.cnn((6, 6, 1), [2], [4], 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="maxpool"):
        V.affine_chain(cnn)


def _box_task(model, prop, n=400):
    """A custom task over the unit box: repair/select/test splits of ``n`` uniform points labelled by ``model``."""
    rng = np.random.default_rng(0)
    splits = {}
    for name in ("repair", "select", "test"):
        x = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        splits[name] = {"x": x, "y": np.argmax(np.asarray(model(x)), -1).astype(np.int32)}
    return jr.repair.custom_task("box", prop, splits, effect=jr.causal.TargetOutput(0)), splits


def _leaky(base):
    """``base`` with its ReLUs written as leaky ReLUs of slope 0: the same function, but not a chain."""
    nodes = tuple(Node.make(n.name, "leaky_relu", n.inputs, alpha=0.0) if n.op == "relu" else n for n in base.graph.nodes)
    return Network(base.graph._replace(nodes=nodes), base.params())


@pytest.mark.parametrize("seed, bound_steps, proven", [(4, 50, True), (3, 0, False), (3, 50, True)])
def test_certified_repair_proves_or_says_it_did_not(seed, bound_steps, proven):
    model = jr.models.mlp([2, 8, 2], key=jax.random.key(seed))
    chain = V.affine_chain(model)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    c = np.array([1.0, -1.0])
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    t = exact - 0.3 * abs(exact) - 0.05  # the model reaches y0 − y1 >= t somewhere in the box: a violation
    prop = jr.properties.Vnnlib(np.stack([lo, hi], 1)[None], ((-c[None], np.array([-t])),))
    assert V.verify(model, prop, timeout=30).verdict == "unsafe"
    task, splits = _box_task(model, prop)
    r = jr.repair(model, task, certify=True, certify_rounds=3, verify_timeout=20, k=4, bounds=(0.0, 2.0),
                  generations=20, population_size=10, a=0.05, certify_bound_steps=bound_steps)
    cert = r.certificate
    assert cert["proven"] == proven
    # seed 3: the point repairs stay unsafe round after round; training on the bounds of the boxes branch
    # and bound leaves open proves it in the first round
    assert ("bound" in cert["rounds"][0]) == (seed == 3 and bound_steps > 0)
    assert 1 <= len(cert["rounds"]) <= 3 and cert["verdict"] == cert["rounds"][-1]["verdict"]
    again = V.verify(r.model, prop, timeout=30)
    assert cert["proven"] == (cert["verdict"] == "safe")
    if cert["proven"]:
        assert again.verdict == "safe" and cert["certificate_boxes"] > 0
    else:  # not proven: each round trained on more points than the one before, and the record says so
        sizes = [x["repair_set"] for x in cert["rounds"]]
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        assert "no (" in r.table()
    assert r.to_json()["certificate"]["rounds"][0]["round"] == 1
    with pytest.raises(ValueError, match="a property the verifier reads"):
        jr.repair(model, jr.repair.custom_task("p", jr.properties.Misclassification(), splits,
                                               effect=jr.causal.TargetOutput(0)), certify=True)


# --- bounds over graphs that are not chains: residual add, leaky ReLU, max pooling, batch norm, conv ---


def _residual_net(key, alpha=0.1, pool=(2, 2)):
    """conv-BN-leaky-conv + 1x1-conv shortcut, add, ReLU, max pool, flatten, dense: a branching graph."""
    k = jax.random.split(key, 5)
    nodes = (Node.make("c1", "conv2d", "input", strides=(1, 1), padding="SAME"),
             Node.make("bn", "batchnorm", "c1", eps=1e-5), Node.make("a1", "leaky_relu", "bn", alpha=alpha),
             Node.make("c2", "conv2d", "a1", strides=(1, 1), padding="SAME"),
             Node.make("proj", "conv2d", "input", strides=(1, 1), padding="VALID"),
             Node.make("add", "add", ("c2", "proj")), Node.make("a2", "relu" if alpha != 1.0 else "leaky_relu", "add", alpha=alpha),
             Node.make("pool", "maxpool", "a2", window=pool, strides=(2, 2) if pool == (2, 2) else (1, 1), padding="SAME"),
             Node.make("f", "flatten", "pool"), Node.make("out", "dense", "f"))
    n_flat = 2 * 2 * 2 if pool == (2, 2) else 4 * 4 * 2
    params = {"c1": {"kernel": jax.random.normal(k[0], (3, 3, 1, 2)) * 0.6, "bias": jnp.array([0.1, -0.1])},
              "bn": {"scale": jnp.array([1.5, -0.7]), "bias": jnp.array([0.2, 0.0]), "mean": jnp.array([0.1, -0.2]),
                     "var": jnp.array([0.5, 2.0])},
              "c2": {"kernel": jax.random.normal(k[1], (3, 3, 2, 2)) * 0.5},
              "proj": {"kernel": jax.random.normal(k[2], (1, 1, 1, 2))},
              "out": {"kernel": jax.random.normal(k[3], (n_flat, 3)), "bias": jnp.zeros(3)}}
    return Network(Graph(nodes, (4, 4, 1), "out"), params)


def _sample_box(rng, n_in, n=3000):
    c = rng.normal(size=n_in).astype(np.float32)
    w = rng.uniform(0.05, 0.5, n_in).astype(np.float32)
    lo, hi = c - w, c + w
    x = lo + rng.uniform(size=(n, n_in)) * (hi - lo)
    x[: n // 4] = np.where(rng.uniform(size=(n // 4, n_in)) < 0.5, lo, hi)  # corners: where the extremes often are
    return lo, hi, x.astype(np.float32)


def test_graph_bounds_contain_every_sampled_output_on_a_residual_leaky_maxpool_net():
    model = _residual_net(jax.random.key(2))
    g, p = model.graph, model.params()
    rng = np.random.default_rng(1)
    eye = np.eye(3)
    C = np.concatenate([eye, -eye, [[1.0, -1.0, 0.0]]])  # the outputs, their negatives and a margin row
    for trial in range(3):
        lo, hi, x = _sample_box(rng, 16)
        y = np.asarray(model(x.reshape(-1, 4, 4, 1)))
        ilo, ihi = (np.asarray(v) for v in _graph_interval(g, p, lo, hi))
        assert np.all(y >= ilo - 1e-4) and np.all(y <= ihi + 1e-4)
        cl = np.asarray(_graph_crown(g, p, lo, hi, C, np.zeros(len(C))))
        assert np.all(cl[:3, None] <= y.T + 1e-4) and np.all(-cl[3:6, None] >= y.T - 1e-4)  # sound
        assert cl[6] <= (y[:, 0] - y[:, 1]).min() + 1e-4
        assert np.all(cl[:3] >= ilo - 1e-5) and np.all(-cl[3:6] <= ihi + 1e-5)  # never looser than intervals
        assert np.mean(-cl[3:6] - cl[:3]) < np.mean(ihi - ilo)  # and tighter here
    pre = V.graph_crown_pre(g, p, lo, hi)  # bounded: the inputs of the three nonlinear ops
    assert set(pre) == {"bn", "add", "a2"}
    again = np.asarray(V.graph_crown(g, p, lo, hi, C, np.zeros(len(C)), pre=pre))  # given the intermediate bounds
    np.testing.assert_allclose(again, cl, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(V.graph_alpha_crown(g, p, lo, hi, C, np.zeros(len(C)), pre=pre)[0]),
                               np.asarray(V.graph_alpha_crown(g, p, lo, hi, C, np.zeros(len(C)))[0]), rtol=1e-6, atol=1e-6)
    sites = jr.models.run(g, p, jnp.asarray(x.reshape(-1, 4, 4, 1)), all_sites=True)
    for name, (l, u) in pre.items():  # the intermediate bounds contain every sampled value too
        v = np.asarray(sites[name]).reshape(len(x), -1)
        assert np.all(v >= np.asarray(l) - 1e-4) and np.all(v <= np.asarray(u) + 1e-4), name


def test_graph_crown_is_exact_on_an_affine_residual_net():
    # leaky ReLU with slope 1 and 1x1 max pooling are the identity: the net is affine, so CROWN's
    # bounds must be the exact extremes c·y over the box, J c + b -/+ |J| r (checks every transpose)
    model = _residual_net(jax.random.key(3), alpha=1.0, pool=(1, 1))
    g, p = model.graph, model.params()
    rng = np.random.default_rng(2)
    lo, hi, _ = _sample_box(rng, 16, n=4)
    f = lambda v: model(v.reshape(1, 4, 4, 1))[0]  # noqa: E731
    J = np.asarray(jax.jacfwd(f)(jnp.zeros(16)), np.float64)
    b = np.asarray(f(jnp.zeros(16)), np.float64)
    c, r = (hi + lo) / 2, (hi - lo) / 2
    exact_lo, exact_hi = J @ c + b - np.abs(J) @ r, J @ c + b + np.abs(J) @ r
    cl = np.asarray(_graph_crown(g, p, lo, hi, np.concatenate([np.eye(3), -np.eye(3)]), np.zeros(6)))
    np.testing.assert_allclose(cl[:3], exact_lo, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(-cl[3:], exact_hi, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_graph_crown_equals_chain_crown_on_chains(kind):
    model = jr.models.mlp([4, 8, 8, 3], key=jax.random.key(1)) if kind == "mlp" else _small_cnn(jax.random.key(1))
    chain = V.affine_chain(model)
    n_in = chain.weights[0].shape[1]
    lo, hi, _ = _sample_box(np.random.default_rng(3), n_in, n=4)
    C = np.array([[1.0, -1.0, 0.0], [0.0, 0.5, 1.0]])
    got = np.asarray(_graph_crown(model.graph, model.params(), lo, hi, C, np.array([0.1, -0.2])))
    ref = R.crown_lower(chain.weights, chain.biases, lo, hi, C, [0.1, -0.2])  # independent numpy CROWN
    ilo, ihi = R_interval(chain, lo, hi)
    np.testing.assert_allclose(got, np.maximum(ref, np.where(C >= 0, C * ilo, C * ihi).sum(-1) - [0.1, -0.2]),
                               rtol=1e-4, atol=1e-4)


def test_graph_bounds_refuse_ops_they_do_not_cover():
    m = jr.models.mlp([3, 4, 2], key=jax.random.key(0), activation="tanh")
    with pytest.raises(ValueError, match="layer1.*tanh"):
        V.graph_interval(m.graph, m.params(), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="slope"):
        V.check_graph(Graph((Node.make("a", "leaky_relu", "input", alpha=-0.5),), (3,), "a"))


def test_alpha_crown_closes_more_boxes_and_its_certificate_rechecks_in_numpy():
    model = jr.models.mlp([3, 8, 8, 2], key=jax.random.key(0))
    chain = V.affine_chain(model)
    lo, hi = np.full(3, -1.0, np.float32), np.full(3, 1.0, np.float32)
    c = np.array([1.0, -1.0])
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    C, d = -c[None], np.array([-(exact + 0.05)])  # c·y >= exact + 0.05 is unreachable: safe
    prop = jr.properties.Vnnlib(np.stack([lo, hi], 1)[None].astype(np.float64), ((C, d),))
    # α-CROWN alone: sound (below the MILP's exact minimum of -c·y) and never looser than CROWN
    bound, alphas = V.alpha_crown(chain, jnp.asarray(lo), jnp.asarray(hi), C, np.zeros(1), steps=20)
    plain = V.crown(chain, jnp.asarray(lo), jnp.asarray(hi), C, np.zeros(1))
    assert float(plain[0]) <= float(bound[0]) <= -exact + 1e-4
    np.testing.assert_allclose(crown_lower_alpha(chain.weights, chain.biases, lo, hi, C, np.zeros(1), alphas),
                               np.asarray(bound), rtol=1e-4, atol=1e-4)  # the slopes re-create the bound
    crown_only, with_alpha = (V.verify(model, prop, timeout=20, alpha_steps=s) for s in (0, 20))
    assert crown_only.verdict == with_alpha.verdict == "safe"
    assert with_alpha.boxes < crown_only.boxes  # 33 against 545 boxes
    by_alpha = [x for x in with_alpha.certificate if x[3] is not None]
    assert by_alpha and all(_recheck(chain, a, b, C, d, np.zeros(1, int), s) for a, b, _, s in with_alpha.certificate)
    # the recorded slopes matter: plain CROWN does not close every box α-CROWN closed
    assert not all(_recheck(chain, a, b, C, d, np.zeros(1, int), None) for a, b, _, _ in by_alpha)


def test_verify_decides_graphs_through_the_graph_bounds():
    # ReLU written as leaky ReLU with slope 0: not a chain the affine reader takes, so verify bounds the
    # graph; the MILP's exact maximum decides the verdicts either side of it
    base = jr.models.mlp([3, 6, 5, 2], key=jax.random.key(0))
    model = _leaky(base)
    with pytest.raises(ValueError):
        V.affine_chain(model)
    chain = V.affine_chain(base)
    lo, hi = np.full(3, -1.0, np.float32), np.full(3, 1.0, np.float32)
    c = np.array([1.0, -1.0])
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    for t, want in ((exact - 0.05, "unsafe"), (exact + 0.05, "safe")):
        prop = jr.properties.Vnnlib(np.stack([lo, hi], 1)[None].astype(np.float64), ((-c[None], np.array([-t])),))
        v = V.verify(model, prop, timeout=30)
        assert v.verdict == want, (t, exact, v.verdict, v.boxes)
        if want == "unsafe":
            assert float(np.asarray(model(v.counterexample[None].astype(np.float32)))[0] @ c) >= t - 1e-5
        else:  # every closed box re-checks with the independent numpy CROWN (or α-CROWN) of the equivalent chain
            assert all(_recheck(chain, a, b, -c[None], np.array([-t]), np.zeros(1, int), s) for a, b, _, s in v.certificate)
            assert any(s is not None for *_, s in v.certificate)  # α-CROWN over the graph closed some boxes
            assert v.boxes < V.verify(model, prop, timeout=30, alpha_steps=0).boxes  # ... and so needed fewer
    # a residual net with leaky ReLU and max pooling: a point reached by sampling is found
    net = _residual_net(jax.random.key(2))
    x = np.random.default_rng(0).uniform(-0.3, 0.3, size=(500, 16)).astype(np.float32)
    y = np.asarray(net(x.reshape(-1, 4, 4, 1)))
    t = float((y[:, 0] - y[:, 1]).max()) - 0.01
    box = np.stack([np.full(16, -0.3), np.full(16, 0.3)], 1)[None]
    v = V.verify(net, jr.properties.Vnnlib(box, ((np.array([[-1.0, 1.0, 0.0]]), np.array([-t])),)), timeout=30)
    assert v.verdict == "unsafe" and float(np.asarray(net(v.counterexample.reshape(1, 4, 4, 1)))[0] @ [1, -1, 0]) >= t - 1e-5
    C = np.array([[1.0, -1.0, 0.0]])
    above = -float(np.asarray(_graph_crown(net.graph, net.params(), box[0, :, 0], box[0, :, 1], -C, np.zeros(1)))[0])
    v = V.verify(net, jr.properties.Vnnlib(box, ((-C, np.array([-(above + 0.01)])),)), timeout=30)
    assert v.verdict == "safe" and v.boxes == 1  # the graph's CROWN bound closes the whole box


def test_the_widest_input_is_judged_in_the_networks_units():
    # the same network read in raw units (input 0 in thousands, undone by a standardize node, as the .nnet
    # ACAS Xu nets take feet): bisecting by width must not split input 0 alone, so both need as many boxes
    base = jr.models.mlp([3, 8, 8, 2], key=jax.random.key(0))
    raw = jr.models.mlp([3, 8, 8, 2], key=jax.random.key(0), normalize=(np.zeros(3), np.array([1000.0, 1.0, 1.0])))
    raw = raw.with_params({**raw.params(), **base.params()})
    chain = V.affine_chain(base)
    lo, hi = np.full(3, -1.0, np.float32), np.full(3, 1.0, np.float32)
    c = np.array([1.0, -1.0])
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    C, d = -c[None], np.array([-(exact + 0.05)])
    scale = np.array([1000.0, 1.0, 1.0])
    runs = [V.verify(m, jr.properties.Vnnlib(np.stack([lo * s, hi * s], 1)[None].astype(np.float64), ((C, d),)),
                     timeout=30, split="width", alpha_steps=0) for m, s in ((base, np.ones(3)), (raw, scale))]
    assert [r.verdict for r in runs] == ["safe", "safe"]
    assert runs[1].boxes <= 1.2 * runs[0].boxes, [r.boxes for r in runs]  # 184k boxes before, when raw split input 0 only
    cut = V.verify(base, jr.properties.Vnnlib(np.stack([lo, hi], 1)[None].astype(np.float64), ((C, d),)), timeout=0)
    assert cut.verdict == "unknown" and cut.boxes == 0  # out of time before any bound: the whole box is still open
    np.testing.assert_array_equal(np.stack(cut.open_boxes, -1), np.stack([lo, hi], 1)[None])


def test_certified_repair_and_the_falsifier_take_graphs_the_bounds_cover():
    # the seed-4 net of the test above with its ReLUs written as leaky ReLUs of slope 0: not a chain, so the
    # falsifier and certified repair read it through the graph bounds
    base = jr.models.mlp([2, 8, 2], key=jax.random.key(4))
    model = _leaky(base)
    with pytest.raises(ValueError):
        V.affine_chain(model)
    chain = V.affine_chain(base)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    c = np.array([1.0, -1.0])
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    t = exact - 0.3 * abs(exact) - 0.05
    prop = jr.properties.Vnnlib(np.stack([lo, hi], 1)[None], ((-c[None], np.array([-t])),))
    xs, ms = V.counterexamples(model, prop, jax.random.key(0), num_boxes=32)
    assert len(xs) and np.all(np.asarray(model(xs)) @ c >= t - 1e-5) and np.all(ms >= 0)  # each one confirmed
    task, _ = _box_task(model, prop)
    r = jr.repair(model, task, certify=True, certify_rounds=3, verify_timeout=20, k=4, bounds=(0.0, 2.0),
                  generations=20, population_size=10, a=0.05)
    assert r.certificate["proven"], r.certificate["rounds"]
    assert V.verify(r.model, prop, timeout=30).verdict == "safe"
    assert r.model.graph == model.graph  # still the leaky-ReLU graph


@pytest.mark.parametrize("warm", [False, True])
def test_certified_rounds_add_what_the_verifier_found_to_repair_and_select(warm):
    import types

    model = jr.models.mlp([2, 8, 2], key=jax.random.key(4))
    chain = V.affine_chain(model)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    c = np.array([1.0, -1.0])
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    prop = jr.properties.Vnnlib(np.stack([lo, hi], 1)[None], ((-c[None], np.array([-(exact - 0.1)])),))
    task, _ = _box_task(model, prop, n=50)
    seen = []

    def method(start, t):  # a "repair" that changes nothing: every round stays unsafe
        seen.append((start, len(t.data["repair"]["property"]["x"]), len(t.data["select"]["property"]["x"])))
        out = start.with_params(start.params())
        return types.SimpleNamespace(model=out, after=t.report(out), before=t.report(start), config={})

    r = jr.repair.certified_repair(model, task, rounds=3, verify_timeout=10, method=method, warm=warm, bound_steps=0)
    assert [x["verdict"] for x in r.certificate["rounds"]] == ["unsafe"] * 3 and not r.certificate["proven"]
    added = [(a - seen[0][1], b - seen[0][2]) for _, a, b in seen]
    assert added[0] == (0, 0) and added[1][0] == added[1][1] == 33  # the counterexample and 32 points around it
    assert added[2][0] == added[2][1] == 66  # ... in both splits, so the kept checkpoint must fix them too
    assert all((s is model) != warm for s, _, _ in seen[1:])  # warm: each round starts from the last one
    assert seen[0][0] is model and r.before == task.report(model)


def test_graph_alpha_crown_matches_the_numpy_reference_and_is_sound():
    # a ReLU MLP written with leaky ReLUs of slope 0 (bounded as a graph): its α-CROWN bound for the slopes it
    # returns is the independent float64 one of the equivalent chain, and never below CROWN's
    base = jr.models.mlp([3, 6, 5, 2], key=jax.random.key(0))
    model, chain = _leaky(base), V.affine_chain(base)
    C, d = np.array([[1.0, -1.0], [-1.0, 1.0]]), np.zeros(2)
    rng = np.random.default_rng(0)
    better = 0
    for _ in range(3):
        c = rng.uniform(-1, 1, 3)
        lo, hi = (c - 0.6).astype(np.float32), (c + 0.6).astype(np.float32)
        plain = np.asarray(V.graph_crown(model.graph, model.params(), lo, hi, C, d))
        b, alphas = V.graph_alpha_crown(model.graph, model.params(), lo, hi, C, d, steps=20)
        ref = crown_lower_alpha(chain.weights, chain.biases, lo, hi, C, d, [np.asarray(a) for a in alphas])
        np.testing.assert_allclose(np.asarray(b), ref, rtol=1e-4, atol=1e-4)
        assert np.all(np.asarray(b) >= plain - 1e-5)
        better += int(np.sum(np.asarray(b) > plain + 1e-3))
    assert better >= 2
    # a residual net with leaky ReLU (slope 0.1) and max pooling: tighter than CROWN, below every sampled value
    net = _residual_net(jax.random.key(2))
    x = rng.uniform(-0.3, 0.3, size=(5000, 16)).astype(np.float32)
    C3 = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    lo, hi = np.full(16, -0.3, np.float32), np.full(16, 0.3, np.float32)
    plain = np.asarray(V.graph_crown(net.graph, net.params(), lo, hi, C3, np.zeros(2)))
    b, alphas = V.graph_alpha_crown(net.graph, net.params(), lo, hi, C3, np.zeros(2), steps=20)
    b = np.asarray(b)
    assert np.all(b > plain + 1e-3) and np.all(b <= (np.asarray(net(x.reshape(-1, 4, 4, 1))) @ C3.T).min(0))
    # the slopes stay where a line lies below the unit: [0.1, 1] for the leaky ReLU, [0, 1] for the ReLU
    assert len(alphas) == 2 and all(np.all((np.asarray(a) >= f - 1e-6) & (np.asarray(a) <= 1.0)) for a, f in zip(alphas, (0.1, 0.0)))
    assert np.asarray(alphas[0]).min() < 1.0 - 1e-3
