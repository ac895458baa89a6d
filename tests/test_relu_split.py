"""ReLU-split branch and bound (β-CROWN): bounds never above the MILP's exact minimum on split domains,
certificates re-created by an independent float64 numpy implementation and covering the box,
verdicts against the MILP and on VNN-COMP 2021 mnistfc instances, no recompilation for a new box."""

import csv
import importlib.util
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import verify as V
from jaxrepair.bench import _verify as bench_verify
from jaxrepair.verify import _relu_split as S
from tests import reference as R

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "tests" / "fixtures" / "vnncomp" / "mnistfc"
_beta = jax.jit(S.beta_crown, static_argnames=("steps", "refine"))


def _domain_signs(pre, rng, count):
    """Random signs on ``count`` unstable units of each layer (a ReLU-split domain)."""
    signs = []
    for l, u in pre:
        s = np.zeros(len(l), np.int8)
        unstable = np.flatnonzero((np.asarray(l) < 0) & (np.asarray(u) > 0))
        pick = rng.choice(unstable, size=min(count, len(unstable)), replace=False)
        s[pick] = rng.choice([-1, 1], size=len(pick))
        signs.append(s)
    return signs


@pytest.mark.parametrize("refine", [False, True])
def test_beta_crown_is_below_the_milp_minimum_on_split_domains_and_numpy_recreates_it(refine):
    model = jr.models.mlp([6, 10, 10, 2], key=jax.random.key(3))
    chain = V.affine_chain(model)
    lo, hi = np.full(6, -1.0, np.float32), np.full(6, 1.0, np.float32)
    pre = V.crown_pre(chain, jnp.asarray(lo), jnp.asarray(hi))
    C, d = np.array([[1.0, -1.0]], np.float32), np.zeros(1, np.float32)
    rng = np.random.default_rng(0)
    gained = []
    for _ in range(4):
        signs = _domain_signs(pre, rng, 2)
        phases = {(k, int(j)): int(s[j] > 0) for k, s in enumerate(signs) for j in np.flatnonzero(s)}
        exact_min = -R.milp_max(chain.weights, chain.biases, lo, hi, -C[0], phases=phases)[0]  # min of C·y
        b, alphas, betas, _, _, _ = _beta(chain, lo, hi, C, d, pre, [jnp.asarray(s) for s in signs], steps=40,
                                          refine=refine)
        assert float(b[0]) <= exact_min + 1e-4  # sound on the domain
        # the float64 re-creation from the slopes and multipliers alone gives the same bound (refined bounds
        # in both; without refinement the numpy one is at least as tight, which only helps a re-check)
        again = R.beta_crown_lower(chain.weights, chain.biases, lo, hi, C, d, signs, np.asarray(alphas),
                                   np.asarray(betas))
        if refine:
            np.testing.assert_allclose(again, np.asarray(b), atol=2e-4)
        else:
            assert again[0] >= float(b[0]) - 2e-4
        no_beta = R.beta_crown_lower(chain.weights, chain.biases, lo, hi, C, d, signs, np.asarray(alphas),
                                     [np.zeros_like(np.asarray(x)) for x in betas])
        gained.append(again[0] - no_beta[0])
    assert max(gained) > 1e-3  # the split constraints' multipliers raise some bound


def _milp_prop(chain, lo, hi, c, offset):
    """``c·y >= exact max + offset`` as the unsafe region (offset > 0: safe, < 0: violated)."""
    exact, _ = R.milp_max(chain.weights, chain.biases, lo, hi, c)
    C, d = -np.asarray(c)[None], np.array([-(exact + offset)])
    return jr.properties.Vnnlib(np.stack([lo, hi], 1)[None].astype(np.float64), ((C, d),)), exact


def _covered_by_samples(chain, lo, hi, signs, n=3000):
    """An independent check of coverage: every sampled input's ReLU phases agree with some leaf."""
    x = np.random.default_rng(1).uniform(lo, hi, (n, len(lo)))
    phases, h = [], x
    for w, b in zip(chain.weights[:-1], chain.biases[:-1]):
        z = h @ np.asarray(w).T + np.asarray(b)
        phases.append(z)
        h = np.maximum(z, 0)
    z = np.concatenate(phases, 1)  # [n, n_relu]
    leaves = np.asarray(signs, np.float64)  # [m, n_relu]
    fits = np.all((leaves[None] == 0) | (leaves[None] * z[:, None] >= -1e-6), axis=-1)  # [n, m]
    return bool(np.all(fits.any(1)))


def test_relu_split_verdicts_agree_with_the_milp_and_certificates_recheck_in_numpy():
    model = jr.models.mlp([40, 12, 12, 2], key=jax.random.key(1))
    chain = V.affine_chain(model)
    lo, hi = np.full(40, -0.3, np.float32), np.full(40, 0.3, np.float32)
    c = np.array([1.0, -1.0])
    safe_prop, exact = _milp_prop(chain, lo, hi, c, 0.02)
    v = V.verify(model, safe_prop, timeout=60, falsifier=False)
    assert (v.verdict, v.branching) == ("safe", "relu")  # 40 inputs: "auto" splits ReLUs
    assert v.boxes > 1  # the box alone does not close it: the domains do
    rows, rhs, owner = V.stack_clauses(safe_prop.clauses)
    sizes = np.cumsum([w.shape[0] for w in chain.weights[:-1]])[:-1]
    signs, by_lp = [], 0
    for lo_c, hi_c, bounds, cert in v.certificate:
        signs.append(cert["signs"])
        if "lp" in cert:  # every phase fixed, closed by a linear program: the MILP over the split domain agrees
            phases = {(k, int(j)): int(s[j] > 0) for k, s in enumerate(np.split(cert["signs"], sizes)) for j in np.flatnonzero(s)}
            assert R.milp_max(chain.weights, chain.biases, lo_c, hi_c, -rows[0], phases=phases)[0] < -rhs[0]
            by_lp += 1
            continue
        units, vals = cert["betas"]
        betas = np.zeros((len(cert["rows"]), len(cert["signs"])))
        betas[:, units] = vals
        got = R.beta_crown_lower(chain.weights, chain.biases, lo_c, hi_c, rows[cert["rows"]], rhs[cert["rows"]],
                                 np.split(cert["signs"], sizes), np.split(np.asarray(cert["alphas"], np.float64), sizes, -1),
                                 np.split(betas, sizes, -1), box_alphas=cert["box"]["alphas"])
        assert np.all(got > -1e-5)  # the recorded slopes and multipliers close the domain in float64
    assert by_lp < len(signs)  # most domains closed by their bounds
    assert S.covers_the_box(signs) and _covered_by_samples(chain, lo, hi, signs)
    assert not S.covers_the_box(signs[1:])  # a leaf missing: not covered
    unsafe_prop, _ = _milp_prop(chain, lo, hi, c, -0.02)
    u = V.verify(model, unsafe_prop, timeout=60, falsifier=False)  # the bounds' minimisers find it alone
    assert (u.verdict, u.branching) == ("unsafe", "relu")
    assert float(c @ np.asarray(u.output)) >= exact - 0.02 - 1e-5 and np.all(u.counterexample >= lo - 1e-7)


def test_relu_split_decides_mnistfc_instances_as_published_without_recompiling():
    net = jr.convert.from_onnx(MNIST / "mnist-net_256x2.onnx")
    safe = V.verify(net, jr.properties.from_vnnlib(MNIST / "prop_0_0.03.vnnlib"), timeout=60)
    assert (safe.verdict, safe.branching) == ("safe", "relu") and safe.boxes > 1
    compiled = S.bound_domains._cache_size()
    unsafe = V.verify(net, jr.properties.from_vnnlib(MNIST / "prop_0_0.05.vnnlib"), timeout=60)
    assert unsafe.verdict == "unsafe"  # published: violated (nine tools)
    y = np.asarray(net(np.asarray(unsafe.counterexample, np.float32).reshape(1, 784, 1)))[0]
    assert np.argmax(y) != 8  # label 8 is no longer the top class
    assert S.bound_domains._cache_size() == compiled  # a new box of the same shape reuses the program


def test_bench_verify_runs_a_mnistfc_folder_and_counts_wrong_answers(tmp_path):
    for f in MNIST.glob("*.*"):
        shutil.copy(f, tmp_path / f.name)
    with open(tmp_path / "mnistfc_instances.csv", "w") as f:
        f.write("mnist-net_256x2.onnx,prop_0_0.03.vnnlib,60\nmnist-net_256x2.onnx,prop_0_0.05.vnnlib,60\n")
    with open(tmp_path / "results_2021.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tool", "benchmark", "network", "property", "prepare_s", "result", "run_s"])
        for tool, r0, r1 in (("a", "UNSAT", "SAT"), ("b", "holds", "violated"), ("c", "timeout", "unknown"),
                             ("d", "holds", "violated"), ("x", "timeout", "holds")):
            w.writerow([tool, "mnistfc", "./benchmarks/mnistfc/mnist-net_256x2.onnx",
                        "./benchmarks/mnistfc/prop_0_0.03.vnnlib", 0, r0, 1])
            w.writerow([tool, "mnistfc", "./benchmarks/mnistfc/mnist-net_256x2.onnx",
                        "./benchmarks/mnistfc/prop_0_0.05.vnnlib", 0, r1, 1])
        w.writerow(["a", "acasxu", "x.onnx", "./benchmarks/mnistfc/prop_0_0.05.vnnlib", 0, "holds", 1])  # other benchmark
    votes = bench_verify.answers(tmp_path / "results_2021.csv", "mnistfc")
    assert bench_verify.contradicted(votes) == {"x"}  # three tools answer "violated" against it, unanimously
    assert bench_verify.contradicted(votes, quorum=4) == set()
    res = bench_verify.run(str(tmp_path), benchmark="mnistfc", progress=False, log=str(tmp_path / "log.jsonl"))
    assert (res["decided"], res["wrong"], res["safe"], res["unsafe"]) == (2, 0, 1, 1)
    assert [r["published"] for r in res["rows"]] == ["safe", "unsafe"]  # majority of the tools not shown wrong
    # the results table (experiments/verify_vnncomp.py) from the bench's log, beside every tool's counts
    spec = importlib.util.spec_from_file_location("verify_vnncomp", ROOT / "experiments" / "verify_vnncomp.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    table.main([str(tmp_path / "log.jsonl"), "--benchmark", "mnistfc", "--vnncomp-dir", str(tmp_path),
                "--out", str(tmp_path / "out"), "--rerun-unknown", "5"])  # nothing unknown: nothing re-run
    md = (tmp_path / "out" / "verify_mnistfc.md").read_text()
    assert "Decided **2** (1 safe, 1 unsafe)" in md and "**wrong 0**" in md
    assert "| a | 1 | 1 | 2 |" in md and "| x | 1 | 0 | 1 |" in md  # the published tools' counts
    with pytest.raises(FileNotFoundError, match="cifar10_resnet_instances.csv"):
        bench_verify.run(str(tmp_path), benchmark="cifar10_resnet")
    with pytest.raises(ValueError, match="benchmark must be one of"):
        bench_verify.files(str(tmp_path), "mnist")


def test_relu_branching_is_refused_where_it_does_not_apply():
    model = jr.models.mlp([3, 4, 2], key=jax.random.key(0))
    prop = jr.properties.Vnnlib(np.array([[[-1.0, 1.0]] * 3]), ((np.array([[1.0, -1.0]]), np.array([0.0])),))
    with pytest.raises(ValueError, match="branching must be"):
        V.verify(model, prop, branching="neurons")
    cnn = jr.models.cnn((6, 6, 1), [2], [4], 2, key=jax.random.key(0))  # max pooling: a graph, not a chain
    box = jr.properties.Vnnlib(np.array([[[0.0, 1.0]] * 36]), ((np.array([[1.0, -1.0]]), np.array([0.0])),))
    with pytest.raises(ValueError, match="branching='relu' splits the ReLUs of a chain"):
        V.verify(cnn, box, branching="relu")
