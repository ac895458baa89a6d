"""Transformers: ViT and GPT builders against numpy written from the weights, attention heads and
MLP neurons as sites, ACE over them against the loop reference, interventions at token positions,
causal tracing against a loop over (site, position)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.causal import TargetOutput
from tests import reference as ref


@pytest.fixture(scope="module")
def vit():
    return jr.models.vit((8, 8, 1), 3, key=jax.random.key(1), patch=4, dim=8, depth=2, heads=2, mlp=12)


@pytest.fixture(scope="module")
def gpt():
    return jr.models.gpt(11, 6, 2, key=jax.random.key(2), dim=8, depth=2, heads=2, mlp=16)


@pytest.fixture(scope="module")
def images():
    return np.asarray(jax.random.uniform(jax.random.key(3), (5, 8, 8, 1)), np.float32)


@pytest.fixture(scope="module")
def tokens():
    return np.asarray(jax.random.randint(jax.random.key(4), (5, 6), 0, 11), np.float32)


def _perturbed(model, key):
    # Random non-trivial norms and biases, so the test sees every parameter.
    apply, params = jr.models.functional(model)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [v + 0.3 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)]
    return apply, jax.tree.unflatten(tree, noisy)


def test_vit_logits_equal_numpy_from_the_weights(vit, images):
    apply, params = _perturbed(vit, jax.random.key(5))
    got = np.asarray(apply(params, jnp.asarray(images)))
    want = ref.vit_logits(params, images, patch=4, depth=2, heads=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gpt_logits_equal_numpy_from_the_weights_and_attention_is_causal(gpt, tokens):
    apply, params = _perturbed(gpt, jax.random.key(6))
    got = np.asarray(apply(params, jnp.asarray(tokens)))
    np.testing.assert_allclose(got, ref.gpt_logits(params, tokens, depth=2, heads=2), rtol=1e-4, atol=1e-5)
    # Changing the last token leaves every earlier position of the residual stream unchanged.
    other = tokens.copy()
    other[:, -1] = (other[:, -1] + 1) % 11
    a, b = apply.sites(params, jnp.asarray(tokens)), apply.sites(params, jnp.asarray(other))
    np.testing.assert_array_equal(np.asarray(a["blk2"])[:, :-1], np.asarray(b["blk2"])[:, :-1])
    assert not np.allclose(np.asarray(a["blk2"])[:, -1], np.asarray(b["blk2"])[:, -1])


def test_sites_name_heads_and_mlp_neurons(vit, gpt):
    info = jr.models.sites(vit)
    assert info["blk1.heads"].shape == (5, 4, 2) and info["blk1.heads"].kind == "attention-heads"
    assert info["blk1.heads"].units == 2 and info["blk1.fc"].units == 12
    assert info["blk1.attn"].kind == "attention-weights"
    assert jr.models.hidden_sites(vit) == ["blk1.heads", "blk1.fc", "blk2.heads", "blk2.fc"]
    assert "blk1.masked" in jr.models.sites(gpt)
    # The FLOP count counts a dense layer once per token and the attention products.
    flops = jr.models.forward_flops(vit)
    assert flops["blk1.q"] == 5 * (2 * 8 * 8 + 8)
    assert flops["blk1.scores"] == 2 * (2 * 5 * 5) * 4 + 2 * 5 * 5


def test_head_intervention_is_one_heads_whole_output(vit, images):
    apply, params = jr.models.functional(vit)
    x = jnp.asarray(images)
    iv = jr.interventions.make("zero", (5, 4, 2), [1], per_channel=True)
    env = apply.sites(params, x, {"blk1.heads": iv})
    z = np.asarray(env["blk1.merge.flat"])
    clean = np.asarray(apply.sites(params, x)["blk1.merge.flat"])
    np.testing.assert_array_equal(z[..., 4:], 0.0)  # head 1 holds columns 4..7 of the merged output
    np.testing.assert_array_equal(z[..., :4], clean[..., :4])


def test_interventions_at_token_positions(gpt, tokens):
    apply, params = jr.models.functional(gpt)
    x = jnp.asarray(tokens)
    iv = jr.interventions.make("set", (6, 16), [3, 5], 2.0, per_channel=True, positions=[1, 4])
    h = np.asarray(apply.sites(params, x, {"blk1.fc": iv})["blk1.fc"])
    clean = np.asarray(apply.sites(params, x)["blk1.fc"])
    mask = np.zeros((6, 16), bool)
    mask[np.ix_([1, 4], [3, 5])] = True
    np.testing.assert_array_equal(h[:, mask], 2.0)
    np.testing.assert_array_equal(h[:, ~mask], clean[:, ~mask])
    with pytest.raises(IndexError, match="positions"):
        jr.interventions.make("set", (6, 16), [3], 1.0, per_channel=True, positions=[6])
    with pytest.raises(ValueError, match="per_channel"):
        jr.interventions.make("set", (6, 16), [3], 1.0, positions=[1])


def test_ace_over_heads_and_mlp_neurons_equals_the_loop_reference(vit, images):
    apply, params = _perturbed(vit, jax.random.key(7))
    model = jr.models.Network(vit.graph, params)
    effect = TargetOutput(target=2, output="prob")
    loc = jr.causal.ace(model, images, effect, num_values=4)
    assert set(loc.sites) == {"blk1.heads", "blk1.fc", "blk2.heads", "blk2.fc"}
    for site in ("blk1.heads", "blk2.fc"):
        alphas, curve, base = ref.ace_curve(model.graph, params, images, site,
                                            lambda f: ref.softmax(f(images))[:, 2], num_values=4, per_channel=True)
        np.testing.assert_allclose(np.asarray(loc.sites[site].alphas), alphas, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(loc.sites[site].curve), curve, rtol=1e-4, atol=1e-5)
    assert len(loc.sites["blk1.heads"].curve) == 2 and len(loc.sites["blk1.fc"].curve) == 12


def test_causal_trace_equals_a_loop_over_sites_and_positions(gpt, tokens):
    apply, params = _perturbed(gpt, jax.random.key(8))
    model = jr.models.Network(gpt.graph, params)
    tr = jr.causal.causal_trace(model, tokens, samples=3, seed=4, positions=[0, 1])
    assert set(tr.effects) == {"blk1", "blk2"} and tr.effects["blk1"].shape == (6,)
    # The same noise, drawn as the function draws it, then every (site, position) restored by hand.
    shape = jr.models.sites(model)["embed"].shape
    clean = apply.sites(params, jnp.asarray(tokens))
    target = np.argmax(np.asarray(clean["logits"]), -1)
    sigma = 3.0 * float(np.asarray(clean["embed"]).std())
    eps = np.array(sigma * jax.random.normal(jax.random.key(4), (3, len(tokens), *shape)))
    eps[:, :, 2:] = 0.0
    p = lambda logits: ref.softmax(np.asarray(logits, np.float64))[np.arange(len(tokens)), target]  # noqa: E731
    for s in ("blk1", "blk2"):
        for t in range(6):
            want = []
            for e in eps:
                iv = {"embed": jr.interventions.Intervention(jnp.ones((), bool), jnp.ones(()), jnp.asarray(e))}
                bad = apply.sites(params, jnp.asarray(tokens), iv)
                patched = np.asarray(bad[s]).copy()
                patched[:, t] = np.asarray(clean[s])[:, t]
                y = apply.resume(params, bad, overrides={s: jnp.asarray(patched)})
                want.append(np.mean(p(y) - p(bad["logits"])))
            np.testing.assert_allclose(tr.effects[s][t], np.mean(want), atol=2e-5)
    # Restoring the whole last position of the last block restores the clean answer exactly.
    assert tr.effects["blk2"][5] == pytest.approx(tr.p_clean - tr.p_corrupt, abs=1e-5)
    assert tr.ranking()[0].score == max(float(v.max()) for v in tr.effects.values())


def test_causal_trace_from_given_corrupted_inputs_and_bad_requests(vit, images):
    tr = jr.causal.causal_trace(vit, images, x_corrupt=images[::-1], target=1)
    assert tr.samples == 1 and tr.corrupt_site == "x_corrupt" and tr.effects["blk1"].shape == (5,)
    with pytest.raises(ValueError, match="no position axis"):
        jr.causal.causal_trace(vit, images, sites=["cls"])
    with pytest.raises(ValueError, match="unknown sites"):
        jr.causal.causal_trace(vit, images, sites=["blk9"])
    with pytest.raises(ValueError, match="x_corrupt has shape"):
        jr.causal.causal_trace(vit, images, x_corrupt=images[:2])
    with pytest.raises(ValueError, match="target class"):
        jr.causal.causal_trace(vit, images, target=7)


def test_builders_round_trip_through_config_and_save(vit, tmp_path, images):
    again = jr.models.from_config(vit.meta["config"], key=jax.random.key(1))
    assert again.graph == vit.graph
    path = tmp_path / "vit.npz"
    jr.models.save(vit, path)
    back = jr.models.load(path)
    a, p = jr.models.functional(vit)
    b, q = jr.models.functional(back)
    np.testing.assert_array_equal(np.asarray(a(p, jnp.asarray(images))), np.asarray(b(q, jnp.asarray(images))))
    with pytest.raises(ValueError, match="multiple of its 3 heads"):
        jr.models.vit((8, 8, 1), 3, key=jax.random.key(0), patch=4, dim=8, heads=3)
    with pytest.raises(ValueError, match="patches"):
        jr.models.vit((9, 8, 1), 3, key=jax.random.key(0), patch=4)


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_onnx_export_matches_onnxruntime_and_imports_back(vit, gpt, images, tokens, opset):
    ort = pytest.importorskip("onnxruntime")
    for model, x in ((vit, images), (gpt, tokens)):
        apply, params = jr.models.functional(model)
        want = np.asarray(apply(params, jnp.asarray(x)))
        proto = jr.convert.to_onnx(model, opset=opset)
        sess = ort.InferenceSession(proto.SerializeToString())
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
        back = jr.convert.from_onnx(proto)
        b, q = jr.models.functional(back)
        np.testing.assert_allclose(np.asarray(b(q, jnp.asarray(x))), want, rtol=1e-5, atol=2e-6)
    ops = {n.op for n in jr.convert.from_onnx(jr.convert.to_onnx(gpt, opset=opset)).graph.nodes}
    assert {"embed", "matmul", "causal_mask", "take"} <= ops


def test_onnx_import_refuses_what_it_cannot_represent(gpt):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def model(nodes, inits, out_shape):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    # A mask that is not causal.
    mask = onnx.numpy_helper.from_array(np.eye(4, dtype=bool), "m")
    low = onnx.numpy_helper.from_array(np.float32(-3.4e38), "low")
    bad = model([helper.make_node("Where", ["m", "x", "low"], ["y"], name="w")], [mask, low], ["N", 4, 4])
    with pytest.raises(jr.convert.ConversionError, match="causal attention mask"):
        jr.convert.from_onnx(bad)
    # LayerNormalization over two axes.
    sc = onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "s")
    ln = model([helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="ln", axis=1)], [sc], ["N", 4, 4])
    with pytest.raises(jr.convert.ConversionError, match="only the last axis"):
        jr.convert.from_onnx(ln)


@pytest.mark.parametrize("site", ["blk1.heads", "blk2.fc"])
def test_factors_on_heads_and_mlp_neurons_fold_into_weights(vit, images, site):
    apply, params = _perturbed(vit, jax.random.key(9))
    info = jr.models.sites(vit)
    space = jr.repair.FactorSpace.build(vit.graph, info, [site], 3)
    units = [0, 1] if site.endswith("heads") else [0, 5, 11]
    slots = space.slots([(site, u) for u in units])
    flat = np.asarray([0.0, 1.7, 0.4][: len(units)] + [1.0] * (3 - len(units)), np.float32)
    p2, iv = space.realize(params, slots, jnp.asarray(flat))
    want = np.asarray(apply(p2, jnp.asarray(images), iv))
    folded = space.fold(params, slots, flat)
    np.testing.assert_allclose(np.asarray(apply(folded, jnp.asarray(images))), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want, np.asarray(apply(params, jnp.asarray(images))))


def test_token_task_is_seeded_decided_and_its_trigger_is_one_token():
    a, b = jr.data.load_token_task(seed=3, train=500, val=50, test=50), jr.data.load_token_task(seed=3, train=500, val=50, test=50)
    np.testing.assert_array_equal(a["train"].x, b["train"].x)
    x, y = a["train"].x, a["train"].y
    assert x.shape == (500, 16) and x.min() >= 1 and x.max() <= 30
    score = ((x >= 1) & (x <= 10)).sum(1) - ((x >= 11) & (x <= 20)).sum(1)
    np.testing.assert_array_equal(y, (score > 0).astype(np.int32))
    assert np.all(score != 0) and 0.3 < y.mean() < 0.7
    stamped = np.asarray(jr.data.TokenTrigger(31, -2).stamp(x[:3]))
    assert np.all(stamped[:, -2] == 31) and np.array_equal(np.delete(stamped, -2, 1), np.delete(x[:3], -2, 1))
    with pytest.raises(ValueError, match="does not fit"):
        jr.data.TokenTrigger(31, 16).stamp(x[:3])


def test_transformer_zoo_entries_and_their_suite_cut():
    e = jr.zoo.entry("mnist-vit-badnets")
    assert e.config()["vit"] == (7, 64, 2, 4, 128) and "vit" not in jr.zoo.entry("mnist-badnets").config()
    net = e.network((28, 28, 1), 10, jax.random.key(0))
    assert "blk2.heads" in jr.models.hidden_sites(net)
    g = jr.zoo.entry("tokens-gpt-badnets").network((16,), 2, jax.random.key(0))
    assert g.input_shape == (16,) and "blk1.masked" in jr.models.sites(g)
    fam = jr.suite.families()["backdoor"]
    assert fam.cut_for("mnist-vit-badnets") == "blk1" and fam.cut_for("mnist-badnets") == "flatten"


def test_gpt_backdoor_entry_repairs_and_the_repaired_model_exports(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path))
    bench = jr.zoo.build("tokens-gpt-badnets", epochs=2)
    assert bench.metrics["attack_success_rate"] > 0.5  # the trigger is learnt within two epochs
    task = jr.repair.from_zoo(bench, repair_samples=300, seed=0)
    r = jr.repair.repair(bench.model, task, k=6, generations=4, population_size=8, num_values=4, seed=0)
    assert len(r.selected) == 6 and {n.site for n in r.selected} <= set(jr.models.hidden_sites(bench.model))
    x = np.asarray(bench.splits["test"]["x"][:16], np.float32)
    apply, params = jr.models.functional(r.model)
    proto = jr.convert.to_onnx(r.model)
    sess = ort.InferenceSession(proto.SerializeToString())
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.asarray(apply(params, jnp.asarray(x))),
                               rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- Hugging Face checkpoints
# tests/fixtures/hf/{gpt2,vit}: tiny random-initialised transformers models saved with save_pretrained, and
# torch's logits on seeded inputs (made by tests/fixtures/make_hf_fixtures.py).
HF = __import__("pathlib").Path(__file__).parent / "fixtures" / "hf"


def test_huggingface_gpt2_logits_equal_torch():
    pytest.importorskip("safetensors")
    ref_ = np.load(HF / "gpt2" / "reference.npz")
    ids, want = ref_["input_ids"], ref_["logits"]
    net = jr.convert.from_huggingface(HF / "gpt2", seq_len=ids.shape[1])
    apply, params = jr.models.functional(net)
    got = np.asarray(apply(params, jnp.asarray(ids, jnp.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    last = jr.convert.from_huggingface(HF / "gpt2", seq_len=ids.shape[1], head="last")
    a2, p2 = jr.models.functional(last)
    np.testing.assert_allclose(np.asarray(a2(p2, jnp.asarray(ids, jnp.float32))), want[:, -1], rtol=1e-5, atol=1e-5)
    assert "blk2.fc" in jr.models.hidden_sites(net) and net.meta["huggingface"]["model_type"] == "gpt2"


def test_huggingface_vit_logits_equal_torch_and_export_to_onnx():
    pytest.importorskip("safetensors")
    ort = pytest.importorskip("onnxruntime")
    ref_ = np.load(HF / "vit" / "reference.npz")
    x = np.ascontiguousarray(ref_["pixel_values"].transpose(0, 2, 3, 1))
    net = jr.convert.load_any(HF / "vit")
    apply, params = jr.models.functional(net)
    got = np.asarray(apply(params, jnp.asarray(x)))
    np.testing.assert_allclose(got, ref_["logits"], rtol=1e-5, atol=1e-5)
    sess = ort.InferenceSession(jr.convert.to_onnx(net).SerializeToString())
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], ref_["logits"], rtol=1e-5, atol=1e-5)
    assert jr.convert.source_format(HF / "vit") == "huggingface"


def test_huggingface_bad_folders_are_refused_and_left_alone(tmp_path):
    pytest.importorskip("safetensors")
    import json
    import shutil

    with pytest.raises(jr.convert.ConversionError, match="no config.json"):
        jr.convert.from_huggingface(tmp_path)
    folder = tmp_path / "gpt2"
    shutil.copytree(HF / "gpt2", folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(jr.convert.ConversionError, match="beyond the position table"):
        jr.convert.from_huggingface(folder, seq_len=13)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "n_embd": 32}))
    with pytest.raises(jr.convert.ConversionError, match=r"has shape \(50, 16\), but config.json implies \(50, 32\)"):
        jr.convert.from_huggingface(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(jr.convert.ConversionError, match="model_type 'llama' is not supported"):
        jr.convert.from_huggingface(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").unlink()
    with pytest.raises(jr.convert.ConversionError, match="no model.safetensors"):
        jr.convert.from_huggingface(folder)
    assert {p.name for p in folder.iterdir()} == set(before) - {"model.safetensors"}
    assert (folder / "reference.npz").read_bytes() == before["reference.npz"]


@pytest.mark.parametrize("name", ["gpt2", "bert", "vit"])
def test_torch_dynamo_onnx_exports_import_with_torchs_logits(name):
    """GPT-2 (LM head), BERT (sequence classifier) and ViT as torch.onnx.export(dynamo=True) writes them:
    x.view(-1, width) before each Linear (the batch merged with the tokens), a fused c_attn split in three,
    k transposed through a batch·heads reshape, masks built from Shape/Expand/Where, the softmax NaN guard."""
    ort = pytest.importorskip("onnxruntime")
    ref_ = np.load(HF / f"{name}_dynamo.npz")
    net = jr.convert.from_onnx(HF / f"{name}_dynamo.onnx")
    apply, params = jr.models.functional(net)
    x = ref_["x"].astype(np.float32)
    got = np.asarray(apply(params, jnp.asarray(x)))
    np.testing.assert_allclose(got, ref_["y"], rtol=1e-5, atol=1e-5)
    ops = {n.op for n in net.graph.nodes}
    assert {"layernorm", "matmul"} <= ops and ({"embed"} <= ops) == (name != "vit")
    if name == "gpt2":
        assert "causal_mask" in ops and "slice" in ops
    sess = ort.InferenceSession(jr.convert.to_onnx(net).SerializeToString())  # and back out
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], ref_["y"], rtol=1e-5, atol=1e-5)


def test_imported_transformers_have_their_mlp_neurons_as_sites_and_ace_runs_on_them():
    net = jr.convert.from_onnx(HF / "vit_dynamo.onnx")  # torch decomposes GELU; the importer fuses it back
    assert jr.models.hidden_sites(net) == ["gelu", "gelu_1"]
    assert {n.op for n in net.graph.nodes if n.name in ("gelu", "gelu_1")} == {"gelu"}
    x = np.load(HF / "vit_dynamo.npz")["x"].astype(np.float32)
    loc = jr.causal.ace(net, x, TargetOutput(1, "prob"), num_values=4)
    assert len(loc.sites["gelu"].curve) == 24
    gpt = jr.convert.from_onnx(HF / "gpt2_dynamo.onnx")
    assert [n.attr.get("approximate") for n in gpt.graph.nodes if n.op == "gelu"] == ["tanh", "tanh"]


@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_a_checkpoint_folder_and_its_torch_onnx_export_are_the_same_network(name):
    pytest.importorskip("safetensors")
    ref_ = np.load(HF / f"{name}_dynamo.npz")
    x = ref_["x"].astype(np.float32)
    onnx_net = jr.convert.from_onnx(HF / f"{name}_dynamo.onnx")
    if name == "gpt2":
        folder_net, xf = jr.convert.from_huggingface(HF / "gpt2", seq_len=x.shape[1]), x
    else:
        folder_net, xf = jr.convert.from_huggingface(HF / "vit"), np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    a, p = jr.models.functional(onnx_net)
    b, q = jr.models.functional(folder_net)
    np.testing.assert_allclose(np.asarray(b(q, jnp.asarray(xf))), np.asarray(a(p, jnp.asarray(x))), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(b(q, jnp.asarray(xf))), ref_["y"], rtol=1e-5, atol=1e-5)


def test_rmsnorm_and_padding_masks_against_numpy_and_through_onnx(tokens):
    ort = pytest.importorskip("onnxruntime")
    x = np.asarray(jax.random.normal(jax.random.key(11), (4, 6)), np.float32)
    scale = np.linspace(0.5, 1.5, 6).astype(np.float32)
    got = np.asarray(jr.models.run_op("rmsnorm", {"scale": jnp.asarray(scale)}, [jnp.asarray(x)], {"eps": 1e-6}))
    np.testing.assert_allclose(got, x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6) * scale, rtol=1e-5)
    padded = jr.models.gpt(11, 6, 2, key=jax.random.key(2), dim=8, depth=2, heads=2, mlp=16, pad=0)
    ids = tokens.copy()
    ids[:, :2] = 0  # left padding
    apply, params = jr.models.functional(padded)
    out = np.asarray(apply(params, jnp.asarray(ids)))
    env = apply.sites(params, jnp.asarray(ids))
    w = np.asarray(env["blk1.attn"])  # [n, heads, queries, keys]
    np.testing.assert_array_equal(w[:, :, 2:, :2], 0.0)  # no real query attends to a padded key
    # The same weights without the mask give other logits.
    unmasked = jr.models.gpt(11, 6, 2, key=jax.random.key(2), dim=8, depth=2, heads=2, mlp=16)
    b, q = jr.models.functional(unmasked)
    assert not np.allclose(np.asarray(b(q, jnp.asarray(ids))), out)
    proto = jr.convert.to_onnx(padded)
    sess = ort.InferenceSession(proto.SerializeToString())
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: ids})[0], out, rtol=1e-5, atol=1e-6)
    back = jr.convert.from_onnx(proto)
    c, r = jr.models.functional(back)
    np.testing.assert_allclose(np.asarray(c(r, jnp.asarray(ids))), out, rtol=1e-5, atol=1e-6)
    assert "key_mask" in {n.op for n in back.graph.nodes}


def test_a_flatten_whose_minus_one_is_the_batch_is_not_a_merge():
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.asarray([-1, 16], np.int64), "s")
    w = numpy_helper.from_array(np.arange(48, dtype=np.float32).reshape(16, 3), "w")
    g = helper.make_graph([helper.make_node("Reshape", ["X", "s"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["Y"])],
                          "t", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1, 4, 4])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])], [shape, w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    apply, params = jr.models.functional(jr.convert.from_onnx(m))
    x = np.asarray(jax.random.uniform(jax.random.key(0), (2, 1, 4, 4)), np.float32)
    np.testing.assert_allclose(np.asarray(apply(params, jnp.asarray(x))), x.reshape(2, 16) @ np.arange(48).reshape(16, 3), rtol=1e-5)
