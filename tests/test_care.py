"""CARE's census files: the loader's checks, the task's separate sets, the cold-start run end to end
(on files of the right layout written here; the real ones live outside the repository)."""

import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair.bench import _cold

WIDTHS = (13, 64, 32, 16, 8, 4, 2)
SIZES = {"data": 10_000, "data_pso_di": 1_000, "data_pso": 1_000, "data_acc": 15_060}


def _write(path, **override):
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(6):
        arrays[f"W{i}"] = (rng.normal(size=(WIDTHS[i + 1], WIDTHS[i])) / np.sqrt(WIDTHS[i])).astype(np.float32)
        arrays[f"b{i}"] = rng.normal(size=WIDTHS[i + 1]).astype(np.float32) * 0.1
    for name, n in SIZES.items():
        x = rng.integers(0, 10, size=(n, 13)).astype(np.float32)
        x[:, 8] = rng.integers(0, 2, n)
        arrays[f"{name}_x"], arrays[f"{name}_y"] = x, rng.integers(0, 2, n).astype(np.int32)
    arrays.update(override)
    np.savez(path / "census_sex_ref.npz", **arrays)
    return arrays


def test_loader_reads_the_model_and_sets_and_checks_them(tmp_path):
    arrays = _write(tmp_path)
    ref = jr.data.load_care_census(tmp_path)
    x = arrays["data_x"][:50]
    h = x
    for i in range(5):
        h = np.maximum(h @ arrays[f"W{i}"].T + arrays[f"b{i}"], 0)
    want = h @ arrays["W5"].T + arrays["b5"]
    np.testing.assert_allclose(np.asarray(ref.model(x)), want, rtol=1e-5, atol=1e-5)
    assert {s for s, i in jr.sites(ref.model).items() if i.kind == "pre-activation"} == {f"layer{i}.pre" for i in range(1, 6)}
    assert {k: v["x"].shape[0] for k, v in ref.sets.items()} == SIZES
    with pytest.raises(FileNotFoundError, match="census_sex_ref.npz"):
        jr.data.load_care_census(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    _write(bad, W2=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"W2/b2 must have shapes \(16, 32\)"):
        jr.data.load_care_census(bad)
    sex = arrays["data_x"].copy()
    sex[0, 8] = 2
    _write(bad, data_x=sex)
    with pytest.raises(ValueError, match="sex column"):
        jr.data.load_care_census(bad)


def test_care_task_and_cold_run_end_to_end(tmp_path):
    _write(tmp_path)
    ref = jr.data.load_care_census(tmp_path)
    task = jr.bench.care_task(ref)
    # violation on the discriminatory instances, accuracy on the labelled rows; select = repair (CARE has none)
    assert task.data["repair"]["property"]["x"].shape[0] == 1000 and task.data["repair"]["accuracy"]["x"].shape[0] == 1000
    np.testing.assert_array_equal(task.data["repair"]["property"]["x"], ref.sets["data_pso_di"]["x"])
    np.testing.assert_array_equal(task.data["repair"]["accuracy"]["x"], ref.sets["data_pso"]["x"])
    np.testing.assert_array_equal(task.data["select"]["accuracy"]["x"], ref.sets["data_pso"]["x"])
    assert task.data["test"]["accuracy"]["x"].shape[0] == 15_060 and task.localize_batch["x"].shape[0] == 1000
    r = _cold._child(str(tmp_path), 0)
    assert r["units_localised"] == 124 and r["samples"] == 1000 and r["values"] == 16
    assert len(r["selected"]) == 13 and all(s.endswith(".pre") for s, _ in r["selected"])
    # the report is CARE's: discriminatory-instance share on `data`, accuracy on `data_acc`
    m = ref.model
    acc = float(np.mean(np.argmax(np.asarray(m(ref.sets["data_acc"]["x"])), -1) == ref.sets["data_acc"]["y"]))
    assert r["before"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert r["after"]["di_share"] <= r["before"]["di_share"] + 1e-9
    assert set(r["phases"]) == {"setup", "localize", "repair"}
    assert all(p["wall_s"] >= p["run_s"] >= 0 for p in r["phases"].values())
