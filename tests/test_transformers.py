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
