"""Cutting a network at a site (head, site values, attach) and repair tasks lowered past the cut."""

import jax
import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import models, properties


@pytest.fixture(scope="module")
def cnn_task():
    d = jr.data.load_digits()
    net = models.cnn((8, 8, 1), [4, 8], [16], 10, key=jax.random.key(3))
    trig = jr.data.Trigger(2, (-2, -2), 1.0)
    prop = properties.AttackSuccess(trig, 0)
    splits = {"repair": {"x": d["train"].x[:300], "y": d["train"].y[:300]},
              "select": {"x": d["val"].x, "y": d["val"].y}, "test": {"x": d["test"].x, "y": d["test"].y}}
    clean = d["train"].x[:64]
    task = jr.repair.custom_task("digits-bd", prop, splits, effect=jr.causal.CounterfactualPair(0, "prob"),
                                 localize_batch={"x": clean, "x_cf": np.asarray(trig.stamp(clean))}, kind="backdoor")
    return net, task


def test_head_of_site_values_is_the_network(cnn_task):
    net, task = cnn_task
    x = np.asarray(task.data["test"]["accuracy"]["x"])
    for site in ("pool1", "flatten", "fc1"):
        h = models.head(net, site)
        assert h.input_shape == models.sites(net)[site].shape
        np.testing.assert_allclose(h(models.site_values(net, site, x, batch_size=64)), net(x), rtol=1e-5, atol=1e-5)
    assert set(models.head(net, "flatten").params()) == {"fc1.pre", "logits"}
    # attach puts a head's (changed) weights back; the rest of the network is untouched
    h = models.head(net, "flatten")
    p = h.params()
    p["logits"]["bias"] = p["logits"]["bias"] + 1.0
    whole = models.attach(net, h.with_params(p))
    np.testing.assert_allclose(whole.params()["logits"]["bias"], net.params()["logits"]["bias"] + 1.0)
    np.testing.assert_array_equal(whole.params()["conv1.pre"]["kernel"], net.params()["conv1.pre"]["kernel"])


def test_cuts_that_cannot_work_are_refused(cnn_task):
    net, _ = cnn_task
    with pytest.raises(ValueError, match="unknown site 'nope'"):
        models.head(net, "nope")
    with pytest.raises(ValueError, match="hidden site"):
        models.head(net, "logits")
    res = models.resnet((8, 8, 1), [(4, 1)], 10, key=jax.random.key(0))
    inner = "s1b1.conv1"
    with pytest.raises(ValueError, match="also reads"):
        models.head(res, inner)  # the residual's shortcut goes around it


def test_lowered_task_reports_what_the_whole_network_does(cnn_task):
    net, task = cnn_task
    h, low = jr.repair.lower(net, task, "flatten")
    assert low.info["lowered_at"] == "flatten" and "x_trig" in low.data["test"]["property"]
    full, part = task.report(net), low.report(h)
    assert part["violation"] == pytest.approx(full["violation"], abs=1e-6)
    assert part["accuracy"] == pytest.approx(full["accuracy"], abs=1e-6)
    # a repair of the head, attached, has on the whole network the figures the lowered task reported
    r = jr.repair.finetune(h, low, steps=20, eval_every=10)
    whole = models.attach(net, r.model)
    again = task.report(whole)
    assert again["violation"] == pytest.approx(r.after["violation"], abs=1e-6)
    assert again["accuracy"] == pytest.approx(r.after["accuracy"], abs=1e-6)
    with pytest.raises(ValueError, match="eval_every .10. must not exceed steps .5."):
        jr.repair.finetune(h, low, steps=5, eval_every=10)


def test_properties_that_read_inputs_are_not_lowered():
    bench = jr.zoo.load("german-sex")
    task = jr.repair.from_zoo(bench, repair_samples=100)
    with pytest.raises(ValueError, match="IndividualFairness reads the inputs"):
        jr.repair.lower(bench.model, task, models.hidden_sites(bench.model)[0])


def test_cli_repair_after_a_site_writes_the_whole_network(tmp_path, monkeypatch):
    import json

    from jaxrepair.cli import main

    out = tmp_path / "out"
    assert main(["repair", "digits-badnets", "--after", "flatten", "--baseline", "finetune-masked", "--k", "3",
                 "--out", str(out)]) == 0
    run = next(out.iterdir())
    rec = json.loads((run / "repair.json").read_text())
    repaired = jr.load(run / "repaired.npz")
    assert repaired.input_shape == (8, 8, 1)  # the whole network, not the head
    bench = jr.zoo.load("digits-badnets")
    m = jr.zoo.evaluate(bench, repaired)
    assert m["attack_success_rate"] == pytest.approx(rec["after_test"]["violation"], abs=1e-6)
    assert m["test_accuracy"] == pytest.approx(rec["after_test"]["accuracy"], abs=1e-6)
    assert main(["repair", "digits-badnets", "--after", "logits", "--out", str(tmp_path / "o2")]) == 2
