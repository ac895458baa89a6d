import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from tests import reference as ref


def _random_stats(model, key):
    """Non-trivial batch-norm statistics, so inference-mode BN is really exercised."""
    params = model.params()
    for name, p in params.items():
        if "mean" in p:
            k1, k2, k3, k4, key = jax.random.split(key, 5)
            c = p["mean"].shape
            p.update(mean=jax.random.normal(k1, c) * 0.1, var=jax.random.uniform(k2, c, minval=0.5, maxval=1.5),
                     scale=1 + 0.1 * jax.random.normal(k3, c), bias=0.1 * jax.random.normal(k4, c))
    return model.with_params(params)


@pytest.fixture(scope="module")
def models(key):
    k = jax.random.split(key, 3)
    return {
        "mlp": jr.models.mlp([6, 8, 5, 3], key=k[0], activation="leaky_relu:0.1"),
        "cnn": _random_stats(jr.models.cnn((6, 6, 2), [3, 4], [5], 3, key=k[1], batchnorm=True, pool="avg"), k[2]),
        "resnet": _random_stats(jr.models.resnet((6, 6, 2), [(3, 1), (4, 1)], 3, key=k[1]), k[0]),
    }


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_forward_matches_numpy(models, name):
    model = models[name]
    x = np.random.default_rng(0).normal(size=(4, *model.input_shape))
    apply, params = jr.functional(model)
    env = jax.jit(apply.sites)(params, x)
    want = ref.forward(model.graph, params, x)
    for site, value in want.items():
        np.testing.assert_allclose(env[site], value, rtol=1e-5, atol=1e-5, err_msg=site)


def test_sites_named_with_shapes_and_kinds(models):
    s = jr.sites(models["mlp"])
    assert [(k, v.shape, v.kind) for k, v in s.items()] == [
        ("input", (6,), "input"),
        ("layer1.pre", (8,), "pre-activation"),
        ("layer1", (8,), "post-activation"),
        ("layer2.pre", (5,), "pre-activation"),
        ("layer2", (5,), "post-activation"),
        ("logits", (3,), "output"),
    ]
    r = jr.sites(models["resnet"])
    assert r["s2b1.add"].shape == (3, 3, 4) and r["s2b1"].kind == "post-activation"
    assert r["s2b1.proj_bn"].op == "batchnorm"


def test_apply_vmaps_over_params_and_differentiates(models):
    apply, params = jr.functional(models["mlp"])
    x = jnp.ones((2, 6))
    pop = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    out = jax.jit(jax.vmap(apply, in_axes=(0, None)))(pop, x)
    np.testing.assert_allclose(out[0], apply(params, x), rtol=1e-6)
    g = jax.grad(lambda p: apply(p, x).sum())(params)
    assert set(g) == set(params) and float(jnp.abs(g["logits"]["kernel"]).sum()) > 0


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_intervention_kinds_match_numpy(models, name):
    model = models[name]
    apply, params = jr.functional(model)
    info = jr.sites(model)
    site = {"mlp": "layer1", "cnn": "conv2", "resnet": "s1b1.relu1"}[name]
    shape = info[site].shape
    per_channel = len(shape) == 3
    x = np.random.default_rng(1).normal(size=(3, *model.input_shape))
    units = [0, 2]
    cases = [("set", 0.7), ("zero", 0.0), ("scale", -1.5), ("add", 0.25)]
    batch = jr.interventions.stack(
        [jr.interventions.make(k, shape, units, v, per_channel=per_channel) for k, v in cases]
    )
    out = jr.interventions.evaluate(apply, params, x, {site: batch})
    assert out.shape == (4, 3, 3)

    for i, (kind, v) in enumerate(cases):
        def setter(h, kind=kind, v=v):
            sel = (Ellipsis, units) if per_channel else None
            if per_channel:
                h[sel] = {"set": v, "zero": 0.0, "scale": v * h[sel], "add": h[sel] + v}[kind]
                return h
            flat = h.reshape(h.shape[0], -1)
            flat[:, units] = {"set": v, "zero": 0.0, "scale": v * flat[:, units], "add": flat[:, units] + v}[kind]
            return flat.reshape(h.shape)

        want = ref.forward(model.graph, params, x, site, setter)[model.graph.output]
        np.testing.assert_allclose(out[i], want, rtol=1e-5, atol=1e-5, err_msg=kind)


def test_empty_intervention_is_exact(models):
    apply, params = jr.functional(models["resnet"])
    x = jax.random.normal(jax.random.key(3), (5, 6, 6, 2))
    f = jax.jit(apply)
    base = f(params, x)
    assert np.array_equal(f(params, x, {}), base)
    assert np.array_equal(f(params, x, None), base)
    # A set intervention with an all-false mask changes nothing either.
    iv = jr.Intervention(jnp.zeros((1, 1, 3), bool), jnp.zeros(()), jnp.ones(()))
    assert np.array_equal(f(params, x, {"stem": iv}), base)


def test_interventions_on_several_sites_at_once(models):
    apply, params = jr.functional(models["mlp"])
    x = np.random.default_rng(2).normal(size=(4, 6))
    ivs = {"layer1": jr.interventions.do((8,), [1], 2.0), "layer2.pre": jr.interventions.make("scale", (5,), [0, 4], 0.5)}
    got = apply(params, x, ivs)

    env = ref.forward(models["mlp"].graph, params, x)
    # numpy: do the same by hand, layer by layer
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    h1 = env["layer1"].copy()
    h1[:, 1] = 2.0
    z2 = h1 @ p["layer2.pre"]["kernel"] + p["layer2.pre"]["bias"]
    z2[:, [0, 4]] *= 0.5
    h2 = np.where(z2 > 0, z2, 0.1 * z2)
    np.testing.assert_allclose(got, h2 @ p["logits"]["kernel"] + p["logits"]["bias"], rtol=1e-5, atol=1e-5)


def test_out_of_range_units_raise():
    with pytest.raises(IndexError, match="out of range"):
        jr.interventions.do((8,), [8], 1.0)
    with pytest.raises(ValueError, match="unknown intervention kind"):
        jr.interventions.make("multiply", (8,), [0], 1.0)


def test_builders_are_deterministic_and_configurable():
    a = jr.models.from_config("mlp:13-64-32-16-8-4-2", key=jax.random.key(7))
    b = jr.models.from_config({"kind": "mlp", "widths": [13, 64, 32, 16, 8, 4, 2]}, key=jax.random.key(7))
    for pa, pb in zip(jax.tree.leaves(a.params()), jax.tree.leaves(b.params())):
        assert np.array_equal(pa, pb)
    r = jr.models.from_config({"kind": "resnet", "input_shape": [8, 8, 3], "stages": [[8, 1]], "num_classes": 4},
                              key=jax.random.key(0))
    assert jr.sites(r)["logits"].shape == (4,)
    with pytest.raises(ValueError, match="kind"):
        jr.models.from_config({"kind": "transformer"}, key=jax.random.key(0))


def test_save_load_roundtrip_and_no_overwrite(tmp_path, models):
    path = tmp_path / "m.npz"
    jr.save(models["resnet"], path)
    back = jr.load(path)
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
    np.testing.assert_array_equal(back(x), models["resnet"](x))
    assert back.graph == models["resnet"].graph
    with pytest.raises(FileExistsError):
        jr.save(models["mlp"], path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz"):
        jr.load(bad)


def _conv_bn(k, cin, cout):
    return k * k * cin * cout + 2 * cout  # bias-free conv + BN scale and bias


def test_resnet50_bottleneck_matches_torchvision_arithmetic():
    net = jr.models.resnet((32, 32, 3), [(64, 3), (128, 4), (256, 6), (512, 3)], 10, key=jax.random.key(0),
                           block="bottleneck")
    want, c = _conv_bn(3, 3, 64), 64  # CIFAR stem: one 3×3 conv, no max-pool
    for s, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            want += _conv_bn(1, c, width) + _conv_bn(3, width, width) + _conv_bn(1, width, 4 * width)
            if b == 0:  # stride 2 (s > 1) or 64 → 256 channels: a projection shortcut
                want += _conv_bn(1, c, 4 * width)
            c = 4 * width
    want += 2048 * 10 + 10
    # torchvision's resnet50 (25,557,032) with the 7×7 stem swapped for a 3×3 one and a 10-class head
    assert want == 25_557_032 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - (2048 * 1000 + 1000) + 2048 * 10 + 10 == 23_520_842
    assert jr.models.parameter_count(net) == want
    stats = sum(v.size for p in net.params().values() for k, v in p.items() if k in ("mean", "var"))
    assert jr.models.parameter_count(net, trainable=False) == want + stats
    s = jr.sites(net)
    assert [s[f"s{i}b1"].shape for i in range(1, 5)] == [(32, 32, 256), (16, 16, 512), (8, 8, 1024), (4, 4, 2048)]
    assert s["s2b1.relu1"].shape == (32, 32, 128) and s["s2b1.relu2"].shape == (16, 16, 128)  # stride on the 3×3
    assert s["s1b1.proj_bn"].shape == (32, 32, 256) and "s1b2.proj" not in s
    assert len(jr.models.hidden_sites(net)) == 1 + 16 * 3
    assert net.meta["config"]["block"] == "bottleneck"


def test_bottleneck_block_forward_matches_numpy(key):
    net = _random_stats(jr.models.resnet((6, 6, 2), [(2, 1), (3, 2)], 3, key=key, block="bottleneck"), key)
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 2))
    apply, params = jr.functional(net)
    env = jax.jit(apply.sites)(params, x)
    for site, value in ref.forward(net.graph, params, x).items():
        np.testing.assert_allclose(env[site], value, rtol=1e-5, atol=1e-5, err_msg=site)
    assert env["s2b2"].shape == (3, 3, 3, 12)
    back = jr.models.from_config(net.meta["config"], key=key)
    assert back.graph == net.graph
    with pytest.raises(ValueError, match="block"):
        jr.models.resnet((6, 6, 2), [(2, 1)], 3, key=key, block="wide")


def test_forward_flops_count_by_hand():
    cnn = jr.models.cnn((8, 8, 3), [4], [5], 3, key=jax.random.key(0))
    assert jr.models.forward_flops(cnn) == {
        "conv1.pre": 2 * 8 * 8 * 4 * (3 * 3 * 3) + 8 * 8 * 4,  # MACs of every output (padding taps too) + bias
        "conv1": 8 * 8 * 4, "pool1": 4 * 4 * 4 * (2 * 2), "flatten": 0,
        "fc1.pre": 2 * 64 * 5 + 5, "fc1": 5, "logits": 2 * 5 * 3 + 3,
    }
    r = jr.models.resnet((4, 4, 1), [(2, 1), (3, 1)], 2, key=jax.random.key(0))
    f = jr.models.forward_flops(r)
    assert f["stem.conv"] == 2 * 16 * 2 * 9 and f["stem.bn"] == 2 * 16 * 2
    assert f["s2b1.conv1"] == 2 * (2 * 2 * 3) * (9 * 2)  # stride 2: 2×2 outputs
    assert f["s2b1.proj"] == 2 * (2 * 2 * 3) * 2 and f["s2b1.add"] == 2 * 2 * 3
    assert f["pool"] == 2 * 2 * 3 and f["logits"] == 2 * 3 * 2 + 2
