import lzma
from importlib import resources

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.properties import Safety, safety_report


def numpy_nnet(text, x):
    """Independent plain-numpy evaluation of a .nnet file: clip, normalise, ReLU layers, de-normalise."""
    lines = [l for l in text.splitlines() if l.strip() and not l.startswith("//")]
    vals = lambda l: np.array([float(v) for v in l.strip().rstrip(",").split(",")])  # noqa: E731
    n_layers = int(vals(lines[0])[0])
    sizes = vals(lines[1]).astype(int)
    mins, maxs, means, ranges = (vals(lines[k]) for k in (3, 4, 5, 6))
    h = (np.clip(x, mins, maxs) - means[:-1]) / ranges[:-1]
    pos = 7
    for k in range(n_layers):
        w = np.stack([vals(lines[pos + r]) for r in range(sizes[k + 1])])
        pos += sizes[k + 1]
        b = np.array([vals(lines[pos + r])[0] for r in range(sizes[k + 1])])
        pos += sizes[k + 1]
        h = h @ w.T + b
        if k < n_layers - 1:
            h = np.maximum(h, 0)
    return h * ranges[-1] + means[-1]


@pytest.mark.parametrize("ij", [(1, 1), (2, 9), (3, 3), (5, 9)])
def test_nnet_matches_numpy(ij):
    text = lzma.decompress((resources.files("jaxrepair.data") / "bundled" / "acasxu" /
                            f"ACASXU_run2a_{ij[0]}_{ij[1]}_batch_2000.nnet.xz").read_bytes()).decode()
    net = jr.data.load_acasxu(*ij)
    x = np.asarray(Safety(7).sample(jax.random.key(0), 500), np.float64)
    x[:5] *= 1.5  # some inputs outside the range, to exercise the clipping
    want = numpy_nnet(text, x)
    # The graph evaluated in float64 (params straight from the file) matches numpy to 1e-6.
    with jax.enable_x64(True):
        from jaxrepair.convert import network_from_nnet, parse_nnet

        d = parse_nnet(text, "t")
        p64 = {n: dict(v) for n, v in network_from_nnet(d).params().items()}
        p64["input.norm"] = {"mean": np.array(d["means"][:5]), "var": np.array(d["ranges"][:5]) ** 2}
        p64["scores"] = {"mean": np.array(d["means"][-1]), "var": np.array(d["ranges"][-1]) ** 2}
        for i, (w, b) in enumerate(d["layers"][:-1], start=1):
            p64[f"layer{i}.pre"] = {"kernel": w.T, "bias": b}
        p64["logits"] = {"kernel": d["layers"][-1][0].T, "bias": d["layers"][-1][1]}
        got64 = np.asarray(jr.models.run(net.graph, p64, x))
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, want, rtol=1e-6, atol=1e-6)
    # The float32 network (what repair uses) agrees to float32 precision.
    got = np.asarray(jax.jit(net.__call__)(x.astype(np.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert [s for s, i in jr.sites(net).items() if i.kind == "post-activation"] == [f"layer{i}" for i in range(1, 7)]


def test_known_counterexample_of_n29_phi8():
    net = jr.data.load_acasxu(2, 9)
    apply, params = jr.functional(net)
    prop = Safety(8)
    r = safety_report(prop, apply, params, key=jax.random.key(0), num_samples=20_000)
    assert r["num_counterexamples"] >= 1 and r["violation_rate"] == r["num_counterexamples"] / 20_000
    cex = np.array(r["counterexamples"], np.float32)
    assert prop.contains(cex).all()
    # Each reported counterexample violates φ8 when evaluated independently: advisory not in {COC, WL}.
    adv = np.asarray(net(cex)).argmin(-1)
    assert np.all((adv != 0) & (adv != 1))


def test_phi6_samples_union_and_bad_files(tmp_path):
    x = np.asarray(Safety(6).sample(jax.random.key(1), 2000))
    assert Safety(6).contains(x).all() and (x[:, 1] > 0).any() and (x[:, 1] < 0).any()
    with pytest.raises(ValueError, match="φ1..φ10"):
        Safety(11)
    bad = tmp_path / "bad.nnet"
    bad.write_text("7,5,5,50,\n5,50,50,\n")
    with pytest.raises(ValueError, match="bad.nnet"):
        jr.convert.from_nnet(bad)
    text = lzma.decompress((resources.files("jaxrepair.data") / "bundled" / "acasxu" /
                            "ACASXU_run2a_1_1_batch_2000.nnet.xz").read_bytes()).decode()
    (tmp_path / "trunc.nnet").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="truncated"):
        jr.convert.from_nnet(tmp_path / "trunc.nnet")
