import gzip
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import properties as P


def test_digits_split_shapes():
    d = jr.data.load_digits()
    assert {k: v.x.shape for k, v in d.items()} == {"train": (1257, 8, 8, 1), "val": (270, 8, 8, 1), "test": (270, 8, 8, 1)}
    assert all(0 <= v.x.min() and v.x.max() <= 1 for v in d.values())
    assert sorted(np.unique(d["train"].y)) == list(range(10))


def test_idx_npz_and_cifar_loaders(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    (tmp_path / "x.idx").write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, 7, 5, 4) + imgs.tobytes())
    with gzip.open(tmp_path / "y.idx.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 7) + labels.tobytes())
    s = jr.data.load_mnist_idx(tmp_path / "x.idx", tmp_path / "y.idx.gz")
    np.testing.assert_allclose(s.x[..., 0], imgs / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(s.y, labels)
    (tmp_path / "bad.idx").write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, 7, 5, 4) + imgs.tobytes()[:-3])
    with pytest.raises(ValueError, match="bad.idx.*promises"):
        jr.data.read_idx(tmp_path / "bad.idx")

    np.savez(tmp_path / "d.npz", x=imgs, y=labels)
    s = jr.data.load_npz(tmp_path / "d.npz")
    assert s.x.shape == (7, 5, 4, 1) and s.x.max() <= 1
    with pytest.raises(ValueError, match="missing arrays"):
        jr.data.load_npz(tmp_path / "d.npz", y_key="labels")

    cif = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    lab = np.array([4, 0, 9], np.uint8)
    (tmp_path / "c.bin").write_bytes(b"".join(bytes([l]) + c.tobytes() for l, c in zip(lab, cif)))
    s = jr.data.load_cifar_binary(tmp_path / "c.bin")
    np.testing.assert_allclose(s.x, cif.transpose(0, 2, 3, 1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(s.y, lab)
    (tmp_path / "c2.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="3073-byte"):
        jr.data.load_cifar_binary(tmp_path / "c2.bin")


def test_trigger_changes_only_the_patch():
    x = jnp.asarray(jr.data.load_digits()["test"].x[:20])
    trig = jr.data.Trigger(2, (-2, -2), 1.0)
    t = np.asarray(trig.stamp(x))
    changed = np.any(t != np.asarray(x), axis=(0, 3))
    assert np.all(t[:, 6:, 6:, :] == 1.0)
    outside = np.ones((8, 8), bool)
    outside[6:, 6:] = False
    assert not changed[outside].any()
    with pytest.raises(ValueError, match="does not fit"):
        jr.data.Trigger(3, (7, 7)).mask((8, 8, 1))


def test_attack_success_and_failing_set_match_numpy():
    model = jr.models.cnn((8, 8, 1), [2], [4], 3, key=jax.random.key(0))
    apply, params = jr.functional(model)
    rng = np.random.default_rng(1)
    batch = {"x": jnp.asarray(rng.uniform(size=(60, 8, 8, 1)), jnp.float32), "y": jnp.asarray(rng.integers(0, 3, 60))}
    trig = jr.data.Trigger(2, (0, 0), 1.0)
    prop = P.AttackSuccess(trig, 1)
    xt = np.asarray(batch["x"]).copy()
    xt[:, :2, :2, :] = 1.0
    pred_t = np.asarray(apply(params, xt)).argmax(-1)
    y = np.asarray(batch["y"])
    want = np.sum((pred_t == 1) & (y != 1)) / np.sum(y != 1)
    assert float(prop.rate(apply, params, batch)) == pytest.approx(want, abs=1e-6)
    fs = P.failing_set(apply, params, batch)
    pred = np.asarray(apply(params, batch["x"])).argmax(-1)
    assert len(fs["y"]) == int(np.sum(pred != y)) > 0
    assert float(P.Misclassification().rate(apply, params, {k: jnp.asarray(v) for k, v in fs.items()})) == 1.0


def test_backdoor_and_safety_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREPAIR_CACHE", str(tmp_path))
    a = jr.zoo.build("digits-badnets", epochs=1)
    b = jr.zoo.build("digits-badnets", epochs=1)
    for pa, pb in zip(jax.tree.leaves(a.model.params()), jax.tree.leaves(b.model.params())):
        np.testing.assert_array_equal(pa, pb)
    assert a.model.meta["zoo"]["dataset"]["poisoned_training_examples"] == 126
    assert set(a.metrics) == {"test_accuracy", "attack_success_rate", "defence_success_rate", "num_eligible"}
    assert a.metrics["defence_success_rate"] == pytest.approx(1 - a.metrics["attack_success_rate"])
    s = jr.zoo.build("acasxu-n2_9-phi8")
    assert s.metrics["num_counterexamples"] == round(s.metrics["violation_rate"] * 10_000)
    assert (tmp_path / "zoo" / "acasxu-n2_9-phi8.json").exists()
    again = jr.zoo.load("acasxu-n2_9-phi8")  # from the cache
    assert again.metrics["violation_rate"] == s.metrics["violation_rate"]
