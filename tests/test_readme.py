"""Every ```python block of the README runs exactly as printed.

Each block has a test here that executes it (``_block(title)``: the first ``python`` block after the
heading ``title``) and checks what it computed; ``test_every_python_block_has_a_test`` fails when a
block is added without one. Blocks run in a temporary directory, with the zoo cache
(``$JAXREPAIR_CACHE``) there too, so nothing is written elsewhere and nothing is downloaded.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxrepair as jr

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def _block(title: str) -> str:
    text = README.read_text()
    section = text[text.index(f"# {title}\n"):]
    return FENCE.search(section).group(1)


def _run(code: str, title: str) -> dict:
    scope: dict = {}
    exec(compile(code, f"README.md ({title})", "exec"), scope)
    return scope


@pytest.fixture(scope="module", autouse=True)
def zoo_cache(tmp_path_factory):
    """The zoo entries the blocks load are built once per module into a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("jaxrepair-cache")
        mp.setenv("JAXREPAIR_CACHE", str(path))
        yield path


def test_every_python_block_has_a_test():
    """A README ``python`` block is covered when its section's title is passed to ``_block`` below."""
    text = README.read_text()
    tested = set(re.findall(r'_block\("([^"]+)"\)', Path(__file__).read_text()))
    sections: dict[str, int] = {}
    for m in FENCE.finditer(text):
        heading = re.findall(r"^#+ (.+)$", text[:m.start()], re.M)[-1]
        sections[heading] = sections.get(heading, 0) + 1
    assert len(sections) >= 6
    assert {h: n for h, n in sections.items() if n > 1} == {}, "one python block per section: _block reads the first"
    assert sorted(set(sections) - tested) == [], "README python blocks without a test in tests/test_readme.py"
    assert sorted(tested - set(sections)) == [], "tests of README sections that hold no python block"


def test_library_in_one_screen_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = _run(_block("Library in one screen"), "Library in one screen")
    # what the block claims, checked on what it computed
    assert scope["result"].config["preset"] == "fairness"
    assert scope["result"].after["violation"] < scope["result"].before["violation"]
    assert scope["out"]["solution"].shape[0] == 3
    assert (tmp_path / "repaired.onnx").exists()
    assert "violation (test)" in capsys.readouterr().out


def test_methods_and_suites_block_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        s = _run(_block("Methods and suites"), "Methods and suites")
    finally:
        jr.repair.METHODS.pop("unchanged", None)  # the block's own method, registered globally
    assert {"ace-finetune", "random-finetune", "care", "cf-clp"} <= set(s["names"]) and "certified" not in s["names"]
    assert (s["m"].ranking, s["m"].control) == ("ace", "random-finetune")
    assert s["r"].method == "ace-finetune" and s["r"].config["steps"] == 50
    assert s["out"]["solution"].shape[0] == 2 and len(s["best"].selected) == 10
    board = s["board"]
    assert {r["method"] for r in board["rows"]} == {"ace-finetune", "random-finetune", "unchanged"}
    assert board["comparisons"][0]["control"] == "random-finetune" and board["comparisons"][0]["seeds"] == 2
    assert board["comparisons"][0]["verdict"] in ("wins", "tie", "loses")
    assert sorted(os.listdir(tmp_path / "suite-out")) == ["suite_fairness.json", "suite_fairness.md",
                                                           "suite_fairness.png", "suite_fairness.sqlite"]
    assert "ace-finetune" in capsys.readouterr().out


def test_multi_objective_block_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    s = _run(_block("Multi-objective repair: NSGA-II, NSGA-III, `ccbr`, fronts by hypervolume"), "multi-objective")
    assert s["r"].config["strategy"]["name"] == "nsga3" and s["r"].config["strategy"]["population_size"] == 16
    assert s["front"]["method"] == "nsga3" and s["front"]["front"] and s["front"]["hypervolume_share"] >= 0
    assert str(len(s["front"]["front"])) == capsys.readouterr().out.split()[0]
    assert os.listdir(tmp_path) == []  # nothing written


def test_verification_block_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = _run(_block("Verification and certified repair"), "Verification")
    assert scope["v"].verdict in ("safe", "unsafe")
    out = capsys.readouterr().out
    assert out.split()[0] == scope["v"].verdict


def test_spurious_block_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = _run(_block("A spurious correlation on a ResNet"), "spurious")
    colours = scope["colours"]
    assert scope["before"].matched(colours) > 0.3  # the stand-in network learned the border
    assert scope["after"].matched(colours) < 0.1 * scope["before"].matched(colours)
    assert "border colour's ACE on its class" in capsys.readouterr().out


def test_adaptive_ace_block_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    s = _run(_block("Adaptive exact ACE: the exact top k of a large network"), "adaptive ACE")
    exact = jr.causal.ace(s["model"], s["x"], s["effect"])
    assert [n[:2] for n in s["fast"].top()] == [n[:2] for n in exact.top(5)]
    assert [n[:2] for n in s["sure"].top()] == [n[:2] for n in exact.top(5)]
    assert s["fast"].saving > 1 and "Bernstein" in s["sure"].guarantee
    assert "fewer (row, α) evaluations" in capsys.readouterr().out and os.listdir(tmp_path) == []


def test_feature_level_block_runs_as_printed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = _run(_block("Feature-level causal analysis and repair"), "feature level")
    x, cols = s["x"], s["cols"]
    assert s["res"].features == cols and s["res"].expectation.shape == (13, 16, 2)
    assert s["approx"].method == "taylor" and s["approx"].expectation.shape == s["res"].expectation.shape
    x_cf = np.asarray(s["x_cf"])
    np.testing.assert_array_equal(x_cf[:, 8], 1 - x[:, 8])  # the action
    np.testing.assert_array_equal(x_cf[:, 0], x[:, 0])  # age is a root: not a descendant of sex
    assert s["cf"]["num_samples"] == 500 and 0 < s["cf"]["flip_violation"] < 1
    assert s["loc"].top(1)[0].site in jr.sites(s["model"])
    for r in (s["fixed"], s["clp"]):  # both repairs lower the test split's violation
        assert r.after["violation"] < r.before["violation"]
    assert s["fixed"].method.startswith("interchange-")
    assert s["clp"].method == "counterfactual-clp" and "counterfactual_violation" in s["clp"].after
    assert {r["method"] for r in s["irm"]["rows"]} == {"erm", "irm"} and s["tde"]["rows"]
    assert "sex" not in s["dag"]["relationship"] and all("age" not in p for p in s["dag"].values())
    assert len(s["screened"].ranking()) == 30
    assert s["x_shift"].shape == s["x_img"].shape and not np.allclose(np.asarray(s["x_shift"]), s["x_img"])
    assert not (tmp_path / "jaxrepair-out").exists()


def test_scale_out_block_runs_as_printed(tmp_path, zoo_cache):
    """The block forces 4 host devices, which JAX reads when it starts: it runs in a fresh process,
    and its sharded ACE curves are compared with this process's single-device ones."""
    code = _block("Scale-out: devices, hosts, sweeps")
    dump = ("\nnp.savez('scale_out.npz', devices=len(jax.devices()), before=result.before['violation'],\n"
            "         after=result.after['violation'], method=result.method,\n"
            "         **{f'units/{s}': loc.sites[s].curve for s in loc.sites},\n"
            "         **{f'data/{s}': loc2.sites[s].curve for s in loc2.sites})\n")
    (tmp_path / "block.py").write_text(code + dump)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXREPAIR_CACHE=str(zoo_cache))
    done = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "scale_out.npz")
    assert int(got["devices"]) == 4
    assert float(got["after"]) < float(got["before"])
    bench = jr.zoo.load("census-sex")  # the model the subprocess built into the same cache
    ref = jr.causal.ace(bench.model, bench.splits["val"]["x"][:512], jr.causal.Fairness.make(8, [0, 1]), devices=1)
    for s in ref.sites:
        np.testing.assert_allclose(got[f"units/{s}"], ref.sites[s].curve, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[f"data/{s}"], ref.sites[s].curve, rtol=1e-4, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["block.py", "scale_out.npz"]


def test_models_from_other_frameworks_block_runs_as_printed(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    monkeypatch.chdir(tmp_path)
    s = _run(_block("Models from other frameworks"), "other frameworks")
    x = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    expected = np.asarray(s["mlp"](x))
    np.testing.assert_allclose(np.asarray(s["net"](x)), expected, rtol=1e-5, atol=1e-6)  # ONNX round trip
    exported = onnx.load(str(tmp_path / "model.repaired.onnx"))
    (out,) = ReferenceEvaluator(exported).run(None, {exported.graph.input[0].name: x})
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    nnet = jr.convert.from_nnet(tmp_path / "N_1_1.repaired.nnet")
    np.testing.assert_allclose(np.asarray(nnet(x)), expected, rtol=1e-4, atol=1e-4)
    # the state-dict CNN on a blank image: conv gives its bias, ReLU, 2×2 max-pool, then the
    # Linear layer reads the [4, 14, 14] map in PyTorch's (channel-first) flattening order
    sd = jr.convert.load_state_dict(tmp_path / "w.safetensors")
    pooled = np.repeat(np.maximum(sd["0.bias"], 0), 14 * 14)
    blank = np.zeros((2, 1, 28, 28), np.float32)
    np.testing.assert_allclose(np.asarray(s["cnn"](blank)), np.tile(sd["4.weight"] @ pooled + sd["4.bias"], (2, 1)),
                               rtol=1e-5, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["N_1_1.repaired.nnet", "model.onnx", "model.repaired.onnx", "w.safetensors"]


def test_transformers_block_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    s = _run(_block("Transformers: ViT, GPT, and checkpoints from Hugging Face and torch"), "transformers")
    assert set(s["loc"].sites) == {"blk1.heads", "blk1.fc", "blk2.heads", "blk2.fc"}
    assert s["y"].shape == (64, 10) and s["trace"].effects["blk1"].shape == (16,)
    assert "blk1.heads" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["gpt.onnx"]
