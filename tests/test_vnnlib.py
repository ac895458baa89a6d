"""VNN-LIB properties and VNN-COMP's opset-8 ACAS Xu networks."""

from pathlib import Path

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.data._acasxu import acasxu_text

VNN = Path(__file__).parent / "fixtures" / "vnncomp"


def _normalisation():
    d = jr.convert.parse_nnet(acasxu_text(1, 1), "N_1,1")
    return np.array(d["means"][:5]), np.array(d["ranges"][:5]), d["means"][5], d["ranges"][5]


@pytest.mark.parametrize("n", range(1, 11))
def test_vnnlib_files_state_the_builtin_properties(n):
    """Same boxes (VNN-LIB's are normalised) and the same verdict on every sampled output."""
    mean, rng, mo, ro = _normalisation()
    v = jr.properties.from_vnnlib(VNN / f"prop_{n}.vnnlib")
    s = jr.properties.Safety(n)
    raw = v.boxes * rng[None, :, None] + mean[None, :, None]
    key = lambda b: tuple(np.round(b[:, 0], 3))  # noqa: E731 - box order may differ
    got, want = sorted(raw, key=key), sorted(s.boxes, key=key)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-3)
    y = np.array(jax.random.normal(jax.random.key(n), (20000, 5)) * 3)
    y[:500, 0] = (1500.0 - mo) / ro  # outputs on φ1's boundary: a boundary point is a violation in VNN-LIB
    from jaxrepair.properties._acasxu import _VIOLATED

    vnn = np.asarray(v.margin(y) >= 0)
    builtin = np.asarray(_VIOLATED[n](y * ro + mo))
    differ = vnn != builtin
    if n == 1:  # '>' in φ1 against '>=' in the file: they differ exactly on the boundary
        assert np.all(differ[:500] | ~vnn[:500]) and not differ[500:].any()
    else:
        assert not differ.any()


def test_vnnlib_property_evaluates_and_samples():
    v = jr.properties.from_vnnlib(VNN / "prop_6.vnnlib")
    assert v.boxes.shape == (2, 5, 2) and v.num_outputs == 5
    x = np.asarray(v.sample(jax.random.key(0), 4000))
    assert np.all(np.asarray(v.in_boxes(x)))
    lo, hi = v.boxes[..., 0].min(0), v.boxes[..., 1].max(0)
    assert np.all(x >= lo - 1e-6) and np.all(x <= hi + 1e-6)
    both = [np.mean(np.all((x >= b[:, 0]) & (x <= b[:, 1]), axis=1)) for b in v.boxes]
    assert min(both) > 0.3  # both boxes are sampled (equal volumes)
    net = jr.convert.from_onnx(VNN / "ACASXU_run2a_1_1_batch_2000.onnx")
    apply, params = jr.functional(net)
    flat = lambda p, z: apply(p, z.reshape(-1, 1, 1, 5))  # noqa: E731
    viol = np.asarray(v(flat, params, {"x": x}))
    y = np.asarray(flat(params, x))
    allowed_min = np.argmin(y, -1) == 0  # φ6: COC must be minimal
    np.testing.assert_array_equal(viol > 0, ~allowed_min)


DECLARE = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"


@pytest.mark.parametrize("text, message", [
    (DECLARE + "(assert (<= X_0 1.0))\n(assert (>= Y_0 0.0))\n", "not bounded on both sides"),
    (DECLARE + "(assert (<= X_0 Y_0))\n", "mixes inputs and outputs"),
    (DECLARE + "(assert (<= X_0 (* X_0 X_0)))\n", "not linear"),
    ("(declare-const X_0 Real)\n(assert (<= X_0 1.0)\n", "unclosed"),
])
def test_bad_vnnlib_is_named(tmp_path, text, message):
    f = tmp_path / "bad.vnnlib"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        jr.properties.from_vnnlib(f)


def test_opset_8_networks_import_and_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    for name in ("ACASXU_run2a_1_1_batch_2000.onnx", "ACASXU_run2a_1_9_batch_2000.onnx"):
        net = jr.convert.from_onnx(VNN / name)
        assert net.meta["onnx"]["opset"] == 8 and net.input_shape == (1, 1, 5)
        sess = ort.InferenceSession(str(VNN / name), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(8, 1, 1, 5)).astype(np.float32)
        want = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(8)])
        np.testing.assert_allclose(np.asarray(net(x)).reshape(want.shape), want, atol=1e-5)


def test_opsets_below_10_refuse_changed_operators():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Dropout", ["X"], ["Y"], name="d")], "t",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 8)])
    m.ir_version = 3
    with pytest.raises(jr.convert.ConversionError, match="Dropout at opset 8 differs from its opset-10 form"):
        jr.convert.from_onnx(m)
