"""Converters, checked against the source framework as oracle.

ONNX graphs are built here with ``onnx.helper`` across opsets and compared with onnx's reference
evaluator (and onnxruntime where installed). PyTorch and Keras models are tiny committed fixtures
with the outputs their own framework computed (``tests/fixtures/make_fixtures.py`` regenerates
them); when torch is installed, live modules are converted too.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.convert import ConversionError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
ORACLE = np.load(FIX / "oracle.npz")
IR = {10: 5, 11: 6, 13: 7, 17: 8, 18: 8, 21: 10}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _init(name, shape=None, value=None, seed=0, dtype=np.float32):
    v = np.asarray(value if value is not None else _rng(seed).normal(0, 0.5, shape), dtype)
    return numpy_helper.from_array(v, name)


def kitchen_sink(opset: int):
    """One graph using every supported operator, written the way ``opset`` wants it."""
    n, inits = [], []

    def ints(name, values):
        inits.append(_init(name, value=values, dtype=np.int64))
        return name

    inits += [_init("W1", (4, 3, 3, 3), seed=1), _init("B1", (4,), seed=2),
              _init("bn_s", value=_rng(3).uniform(0.5, 1.5, 4)), _init("bn_b", (4,), seed=4),
              _init("bn_m", (4,), seed=5), _init("bn_v", value=_rng(6).uniform(0.5, 2, 4)),
              _init("W2", (4, 2, 2, 2), seed=7), _init("cmul", (4, 1, 1), seed=8),
              _init("cdiv", value=_rng(9).uniform(0.5, 2, (1, 8, 1, 1))),
              _init("Wg", (16, 288), seed=10), _init("Cg", (16,), seed=11), _init("Wm", (8, 16), seed=12),
              _init("W3", (16, 5), seed=13)]
    n.append(helper.make_node("Conv", ["X", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]))
    n.append(helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-3))
    n.append(helper.make_node("Relu", ["bn"], ["r1"]))
    n.append(helper.make_node("Conv", ["r1", "W2"], ["c2"], group=2, auto_pad="SAME_LOWER"))
    n.append(helper.make_node("Add", ["r1", "c2"], ["res"]))
    n.append(helper.make_node("LeakyRelu", ["res"], ["lr"], alpha=0.2))
    n.append(helper.make_node("MaxPool", ["lr"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
    n.append(helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0))
    n.append(helper.make_node("Mul", ["ap", "cmul"], ["scaled"]))
    n.append(helper.make_node("Concat", ["ap", "scaled"], ["cat"], axis=1))
    if opset >= 12:
        n.append(helper.make_node("Constant", [], ["half"], value_float=0.5))
    else:
        n.append(helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.float32(0.5))))
    n.append(helper.make_node("Sub", ["half", "cat"], ["sub"]))
    n.append(helper.make_node("Div", ["sub", "cdiv"], ["div"]))
    if opset < 11:
        n.append(helper.make_node("Clip", ["div"], ["clip"], min=-1.0, max=1.0))
        n.append(helper.make_node("Pad", ["clip"], ["pad"], pads=[0, 0, 1, 0, 0, 0, 0, 1], value=0.25))
    else:
        inits += [_init("lo", value=-1.0), _init("hi", value=1.0), _init("pv", value=0.25)]
        n.append(helper.make_node("Clip", ["div", "lo", "hi"], ["clip"]))
        n.append(helper.make_node("Pad", ["clip", ints("pads", [0, 0, 1, 0, 0, 0, 0, 1]), "pv"], ["pad"]))
    n.append(helper.make_node("GlobalAveragePool", ["pad"], ["gap"]))
    if opset < 13:
        n.append(helper.make_node("Squeeze", ["gap"], ["sq"], axes=[2, 3]))
    else:
        n.append(helper.make_node("Squeeze", ["gap", ints("sq_axes", [2, 3])], ["sq"]))
    if opset < 18:
        n.append(helper.make_node("ReduceMean", ["pad"], ["rm"], axes=[2, 3], keepdims=0))
    else:
        n.append(helper.make_node("ReduceMean", ["pad", ints("rm_axes", [2, 3])], ["rm"], keepdims=0))
    n.append(helper.make_node("Add", ["sq", "rm"], ["sq2"]))
    n.append(helper.make_node("Transpose", ["pad"], ["tr"], perm=[0, 2, 3, 1]))
    # x.view(x.size(0), -1) as the TorchScript exporter writes it
    n.append(helper.make_node("Shape", ["tr"], ["shape"]))
    n.append(helper.make_node("Gather", ["shape", ints("zero", 0)], ["batch"], axis=0))
    if opset < 13:
        n.append(helper.make_node("Unsqueeze", ["batch"], ["batch1"], axes=[0]))
    else:
        n.append(helper.make_node("Unsqueeze", ["batch", ints("u0", [0])], ["batch1"]))
    n.append(helper.make_node("Concat", ["batch1", ints("minus1", [-1])], ["newshape"], axis=0))
    n.append(helper.make_node("Reshape", ["tr", "newshape"], ["flat"]))
    n.append(helper.make_node("Gemm", ["flat", "Wg", "Cg"], ["g"], transB=1, alpha=0.5, beta=2.0))
    n.append(helper.make_node("Sigmoid", ["g"], ["sg"]))
    n.append(helper.make_node("MatMul", ["sq2", "Wm"], ["mm"]))
    n.append(helper.make_node("Tanh", ["mm"], ["th"]))
    n.append(helper.make_node("Add", ["sg", "th"], ["both"]))
    if opset < 13:
        n.append(helper.make_node("Unsqueeze", ["both"], ["us"], axes=[1]))
    else:
        n.append(helper.make_node("Unsqueeze", ["both", ints("u1", [1])], ["us"]))
    n.append(helper.make_node("Flatten", ["us"], ["fl"], axis=1))
    n.append(helper.make_node("Dropout", ["fl"], ["dr"]))
    n.append(helper.make_node("Identity", ["dr"], ["idn"]))
    if opset < 11:  # C became optional in opset 11
        inits.append(_init("C3", value=np.zeros(5)))
    n.append(helper.make_node("Gemm", ["idn", "W3"] + (["C3"] if opset < 11 else []), ["logits"]))
    n.append(helper.make_node("Softmax", ["logits"], ["Y"], axis=1))
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 5])
    m = helper.make_model(helper.make_graph(n, "sink", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = IR[opset]
    return m


def _reference(model, x):
    """onnx's reference evaluator; onnxruntime for opsets < 14, where the reference
    BatchNormalization_9 takes its training-mode branch whenever momentum is set."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 14 and any(n.op_type == "BatchNormalization" for n in model.graph.node):
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {model.graph.input[0].name: x})[0]
    return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]


@pytest.mark.parametrize("opset", sorted(IR))
def test_onnx_operators_match_reference_evaluator(opset):
    m = kitchen_sink(opset)
    onnx.checker.check_model(m, full_check=True)
    net = jr.convert.from_onnx(m)
    x = _rng(opset).normal(size=(5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(net(x)), _reference(m, x), atol=1e-5, rtol=1e-5)
    info = jr.sites(net)
    # every ONNX tensor computed from the input is a site, named after the tensor
    for t in ("c1", "bn", "r1", "c2", "res", "mp", "ap", "cat", "pad", "gap", "sq", "flat", "g", "logits", "Y"):
        assert t in info, t
    assert info["c1"].shape == (8, 8, 4)  # feature maps are channels-last inside jaxrepair
    assert net.meta["onnx"]["opset"] == opset
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(np.asarray(net(x)), sess.run(None, {"X": x})[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_onnx_export_round_trip_matches_reference(opset):
    net = jr.convert.from_onnx(kitchen_sink(17))
    out = jr.convert.to_onnx(net, opset=opset)
    x = _rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_reference(out, x), np.asarray(net(x)), atol=1e-5, rtol=1e-5)
    # the transposes the import added cancel out again
    ops = [nd.op_type for nd in out.graph.node]
    assert ops.count("Transpose") <= 2, ops


@pytest.mark.parametrize("name", ["torch_mlp", "torch_cnn", "torch_resnet", "torch_resnet_dynamo"])
def test_torch_exported_onnx_matches_torch(name):
    net = jr.convert.from_onnx(FIX / f"{name}.onnx")
    key = name.replace("_dynamo", "")
    np.testing.assert_allclose(np.asarray(net(ORACLE[f"{key}.x"])), ORACLE[f"{key}.y"], atol=1e-5, rtol=1e-5)


def test_torch_state_dicts_match_torch(tmp_path):
    specs = json.loads((FIX / "torch_specs.json").read_text())
    net = jr.convert.from_state_dict(FIX / "torch_mlp.safetensors", specs["torch_mlp"], (13,))
    np.testing.assert_allclose(np.asarray(net(ORACLE["torch_mlp.x"])), ORACLE["torch_mlp.y"], atol=1e-5, rtol=1e-5)
    # the same weights as a plain .npz state dict, and the spec as one string
    sd = jr.convert.load_state_dict(FIX / "torch_mlp.safetensors")
    np.savez(tmp_path / "w.npz", **sd)
    net2 = jr.convert.from_state_dict(tmp_path / "w.npz", "Linear, ReLU, Linear, Tanh, Linear", (13,))
    np.testing.assert_allclose(np.asarray(net2(ORACLE["torch_mlp.x"])), ORACLE["torch_mlp.y"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConversionError, match="weight .* but its input"):
        jr.convert.from_state_dict(sd, ["Linear", "ReLU", "Linear", "Linear"], (12,))
    with pytest.raises(ConversionError, match="unused"):
        jr.convert.from_state_dict(sd, ["Linear", "ReLU", "Linear"], (13,))
    with pytest.raises(ValueError, match="not understood"):
        jr.convert.parse_spec(["Linear", "__import__('os')"])


def test_torch_pt_is_loaded_weights_only():
    torch = pytest.importorskip("torch")
    specs = json.loads((FIX / "torch_specs.json").read_text())
    net = jr.convert.from_state_dict(FIX / "torch_cnn.pt", specs["torch_cnn"], (1, 8, 8))
    np.testing.assert_allclose(np.asarray(net(ORACLE["torch_cnn.x"])), ORACLE["torch_cnn.y"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConversionError, match="weights only"):
        jr.convert.load_state_dict(FIX / "evil.pt")
    assert torch is not None


def test_live_torch_modules():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mod = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                              torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(3 * 3 * 3, 4)).eval()
    x = torch.randn(5, 2, 6, 6)
    net = jr.convert.from_torch(mod, x[:1])
    np.testing.assert_allclose(np.asarray(net(x.numpy())), mod(x).detach().numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,key", [("keras_cnn.keras", "keras_cnn"), ("keras_cnn.h5", "keras_cnn"), ("keras_mlp.keras", "keras_mlp")])
def test_keras_models_match_keras(name, key):
    pytest.importorskip("h5py")
    net = jr.convert.from_keras(FIX / name)
    np.testing.assert_allclose(np.asarray(net(ORACLE[f"{key}.x"])), ORACLE[f"{key}.y"], atol=1e-5, rtol=1e-5)
    if key == "keras_cnn":
        assert {"c1.pre", "c1", "bn", "res", "head"} <= set(jr.sites(net))


def test_repaired_converted_model_exports_back(tmp_path):
    """import → repair a neuron (factor folded into the weights) → export → reference evaluator agrees."""
    from jaxrepair.repair import FactorSpace

    net = jr.convert.from_onnx(FIX / "torch_cnn.onnx")
    info = jr.sites(net)
    conv_relu = next(s for s in info if s.endswith("Relu_output_0"))
    selection = [(conv_relu, 1), (conv_relu, 3)]
    space = FactorSpace.build(net.graph, info, [conv_relu], 2)
    slots = space.slots(selection)
    flat = jnp.asarray([0.25, 1.7])
    apply, params = jr.functional(net)
    x = ORACLE["torch_cnn.x"]
    p2, iv = space.realize(params, slots, flat)
    expected = np.asarray(apply(p2, x, iv))
    repaired = net.with_params(space.fold(params, slots, flat))
    np.testing.assert_allclose(np.asarray(repaired(x)), expected, atol=1e-5)
    assert np.max(np.abs(expected - ORACLE["torch_cnn.y"])) > 1e-3  # the repair changed the function
    path = jr.convert.to_onnx(repaired, tmp_path / "cnn.repaired.onnx") and tmp_path / "cnn.repaired.onnx"
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    np.testing.assert_allclose(_reference(m, x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(FileExistsError):
        jr.convert.to_onnx(repaired, path)


def test_native_models_export_to_onnx(key):
    from tests.test_models import _random_stats

    k = jax.random.split(key, 3)
    models = {
        "mlp": jr.models.mlp([5, 7, 3], key=k[0], softmax=True),
        "cnn": _random_stats(jr.models.cnn((6, 6, 1), [3], [4], 3, key=k[1], batchnorm=True), k[2]),
        "resnet": _random_stats(jr.models.resnet((4, 4, 2), [(2, 1), (3, 1)], 3, key=k[2]), k[0]),
    }
    for name, model in models.items():
        m = jr.convert.to_onnx(model)
        x = _rng(2).normal(size=(3, *model.input_shape)).astype(np.float32)
        np.testing.assert_allclose(_reference(m, x), np.asarray(model(x)), atol=1e-5, rtol=1e-5, err_msg=name)
        back = jr.convert.from_onnx(m)
        np.testing.assert_allclose(np.asarray(back(x)), np.asarray(model(x)), atol=1e-5, rtol=1e-5, err_msg=name)


def test_ace_on_converted_model_equals_native(key):
    from tests.test_models import _random_stats

    k = jax.random.split(key, 2)
    native = _random_stats(jr.models.cnn((6, 6, 1), [3], [4], 3, key=k[0], batchnorm=True), k[1])
    converted = jr.convert.from_onnx(jr.convert.to_onnx(native))
    x = _rng(3).normal(size=(20, 6, 6, 1)).astype(np.float32)
    sites = ["conv1", "fc1"]
    assert all(s in jr.sites(converted) for s in sites)
    a = jr.causal.ace(native, x, jr.causal.TargetOutput(1), sites=sites, num_values=4)
    b = jr.causal.ace(converted, x, jr.causal.TargetOutput(1), sites=sites, num_values=4)
    for s in sites:
        np.testing.assert_allclose(b.sites[s].curve, a.sites[s].curve, atol=1e-5, rtol=1e-5, err_msg=s)
    assert [(n.site, n.unit) for n in a.top(5)] == [(n.site, n.unit) for n in b.top(5)]


def test_nnet_export_round_trip(tmp_path):
    from jaxrepair.convert import network_from_nnet, parse_nnet

    net = jr.data.load_acasxu(1, 1)
    text = jr.convert.nnet_text(net)
    back = network_from_nnet(parse_nnet(text, "round-trip"))
    x = np.random.default_rng(0).uniform(-1, 1, (64, 5)).astype(np.float32) * np.array([60000, 3.14, 3.14, 1200, 1200], np.float32)
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(net(x)), rtol=1e-5, atol=1e-4)
    path = jr.convert.to_nnet(net, tmp_path / "n11.nnet")
    assert jr.convert.load_any(path).graph == net.graph
    with pytest.raises(FileExistsError):
        jr.convert.to_nnet(net, path)
    with pytest.raises(ValueError, match="nnet"):
        jr.convert.nnet_text(jr.models.cnn((6, 6, 1), [3], [4], 3, key=jax.random.key(0)))


# ----------------------------------------------------------------------------- bad input


def _tiny(op="Relu", opset=17, dims=("N", 4), elem=TensorProto.FLOAT, **attrs):
    node = helper.make_node(op, ["X"], ["Y"], name="the_node", **attrs)
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info("X", elem, list(dims))],
                          [helper.make_tensor_value_info("Y", elem, list(dims))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_bad_onnx_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ConversionError, match=r"unsupported ONNX operator 'Cos' \(node 'the_node', opset 17\); supported operators: Abs, Add, "):
        jr.convert.from_onnx(_tiny("Cos"))
    with pytest.raises(ConversionError, match="opset 6 is not supported"):
        jr.convert.from_onnx(_tiny(opset=6))
    with pytest.raises(ConversionError, match="dynamic dimensions"):
        jr.convert.from_onnx(_tiny(dims=("N", "features")))
    assert jr.convert.from_onnx(_tiny(dims=("N", "features")), input_shape=(4,)).input_shape == (4,)
    with pytest.raises(ConversionError, match="dtype INT64; integer inputs are read as token ids, but this one reaches the output instead of an embedding"):
        jr.convert.from_onnx(_tiny("Identity", elem=TensorProto.INT64))
    good = (FIX / "torch_cnn.onnx").read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(ConversionError, match="trunc.onnx"):
        jr.convert.from_onnx(tmp_path / "trunc.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot a model at all" * 10)
    with pytest.raises(ConversionError, match="junk.onnx"):
        jr.convert.from_onnx(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError):
        jr.convert.from_onnx(tmp_path / "missing.onnx")
    # a reshape that folds the batch into the features
    shape = numpy_helper.from_array(np.asarray([-1], np.int64), "s")
    g = helper.make_graph([helper.make_node("Reshape", ["X", "s"], ["Y"], name="r")], "t",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None])], [shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(ConversionError, match="batch"):
        jr.convert.from_onnx(m)
    with pytest.raises(ConversionError, match="Lambda|unsupported Keras layer"):
        _keras_with_lambda(tmp_path)


def _keras_with_lambda(tmp_path):
    import zipfile

    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
        {"class_name": "Lambda", "config": {"name": "evil", "function": "..."}}]}}
    path = tmp_path / "lambda.keras"
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_group("layers")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(cfg))
        z.write(tmp_path / "w.h5", "model.weights.h5")
    return jr.convert.from_keras(path)


def test_cli_convert_and_repair_export(tmp_path, capsys):
    from jaxrepair.cli import main

    src = tmp_path / "cnn.onnx"
    src.write_bytes((FIX / "torch_cnn.onnx").read_bytes())
    assert main(["convert", str(src), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "cnn.npz" in out and "verify: max" in out
    assert jr.load(tmp_path / "cnn.npz").input_shape == (1, 8, 8)
    assert main(["convert", str(src), "--verify"]) == 2  # never overwrites the earlier output
    assert main(["convert", str(tmp_path / "cnn.npz"), "--to", "onnx", "--out", str(tmp_path / "again.onnx")]) == 0
    m = onnx.load(str(tmp_path / "again.onnx"))
    x = ORACLE["torch_cnn.x"]
    np.testing.assert_allclose(_reference(m, x), ORACLE["torch_cnn.y"], atol=1e-5, rtol=1e-5)


def _activation_chain(opset: int, gelu: str | None):
    n = [helper.make_node("Gemm", ["X", "W1", "B1"], ["h"]),
         helper.make_node("Elu", ["h"], ["e"], alpha=0.7),
         helper.make_node("Selu", ["e"], ["s"]),
         helper.make_node("Abs", ["s"], ["ab"]),
         helper.make_node("Sqrt", ["ab"], ["sq"]),
         helper.make_node("Neg", ["sq"], ["ng"]),
         helper.make_node("Exp", ["ng"], ["ex"]),
         helper.make_node("Erf", ["s"], ["er"]),
         helper.make_node("Add", ["ex", "er"], ["ad"]),
         helper.make_node("Softplus", ["ad"], ["sp"]),
         helper.make_node("HardSigmoid", ["sp"], ["hs"], alpha=0.3, beta=0.4)]
    last = "hs"
    if gelu is not None:
        n.append(helper.make_node("Gelu", ["hs"], ["g"], approximate=gelu))
        last = "g"
    n += [helper.make_node("Gemm", [last, "W2", "B2"], ["z"]), helper.make_node("LogSoftmax", ["z"], ["Y"], axis=1)]
    inits = [_init("W1", (6, 8), seed=1), _init("B1", (8,), seed=2), _init("W2", (8, 3), seed=3), _init("B2", (3,), seed=4)]
    g = helper.make_graph(n, "acts", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset < 20 else 10
    return m


@pytest.mark.parametrize("opset,gelu", [(13, None), (17, None), (20, "none"), (21, "tanh")])
def test_more_activations_import_and_export(opset, gelu):
    m = _activation_chain(opset, gelu)
    onnx.checker.check_model(m, full_check=True)
    net = jr.convert.from_onnx(m)
    x = _rng(opset).normal(size=(7, 6)).astype(np.float32) * 2
    np.testing.assert_allclose(np.asarray(net(x)), _reference(m, x), atol=1e-5, rtol=1e-5)
    assert jr.sites(net)["e"].kind == "post-activation"
    for out_opset in (17, 21):  # Gelu is decomposed before opset 20
        back = jr.convert.to_onnx(net, opset=out_opset)
        np.testing.assert_allclose(_reference(back, x), np.asarray(net(x)), atol=1e-5, rtol=1e-5)
        assert ("Gelu" in [nd.op_type for nd in back.graph.node]) == (gelu is not None and out_opset >= 20)


def test_reduce_mean_with_empty_axes_and_parameter_free_models_match_onnxruntime():
    """Two cases the node tests caught: ReduceMean with an empty ``axes`` input averages every axis
    but the batch's... and a graph without one parameter (a lone Relu) imports and runs."""
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)

    def run_ort(m):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"X": x})[0]

    # opset 18: axes is an input; an empty one means "all axes" unless noop_with_empty_axes=1.
    # The batch axis cannot be averaged by a per-example model, so the importer must refuse, not pass through.
    axes = numpy_helper.from_array(np.asarray([], np.int64), "axes")
    for noop in (0, 1):
        node = helper.make_node("ReduceMean", ["X", "axes"], ["Y"], name="rm", keepdims=1, noop_with_empty_axes=noop)
        g = helper.make_graph([node], "t", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4, 5])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4, 5] if noop else [1, 1, 1])],
                              [axes])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        m.ir_version = 8
        if noop:
            np.testing.assert_allclose(np.asarray(jr.convert.from_onnx(m)(x)), run_ort(m), atol=1e-6)
        else:
            assert run_ort(m).shape == (1, 1, 1)  # onnxruntime: every axis, the batch included
            with pytest.raises(ConversionError, match="batch axis"):
                jr.convert.from_onnx(m)
    # explicit non-batch axes as an input
    axes = numpy_helper.from_array(np.asarray([1, 2], np.int64), "axes")
    node = helper.make_node("ReduceMean", ["X", "axes"], ["Y"], name="rm", keepdims=0)
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4, 5])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N"])], [axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    np.testing.assert_allclose(np.asarray(jr.convert.from_onnx(m)(x)), run_ort(m), atol=1e-6)
    # a parameter-free graph
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"], name="r")], "t",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4, 5])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4, 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    net = jr.convert.from_onnx(m)
    assert net.params() == {} and jr.functional(net)[1] == {}
    np.testing.assert_allclose(np.asarray(net(x)), run_ort(m), atol=0)
