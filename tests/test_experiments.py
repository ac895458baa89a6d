"""Experiment scripts that cannot run their real configuration in CI run a tiny one here."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_script_on_a_tiny_config(tmp_path, capsys):
    """experiments/gpu.py (issue 26's accelerator figures) end to end on small ResNets: exact and
    adaptive ACE agree on the top 10 (with every pair in one round they are the same numbers), the
    PSO search runs every generation, and the record says which device measured it."""
    gpu = _script("gpu")
    gpu.main(["--tiny", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "gpu-tiny.json").read_text())
    assert record["tiny"] and record["platform"] == "cpu" and [r["network"] for r in record["rows"]] == ["resnet18", "resnet50"]
    for r in record["rows"]:
        assert r["channels"] == 16 and r["adaptive"]["top10_overlap"] == 10
        assert r["adaptive"]["top10"] == r["exact"]["top10"]
        assert r["pso"]["generations_run"] == 3 and r["pso"]["evaluations"] > 0
    assert "wrote" in capsys.readouterr().out
    gpu.main(["--tiny", "--out", str(tmp_path), "--budget-s", "0"])  # nothing starts: all recorded as skipped
    record = json.loads((tmp_path / "gpu-tiny.json").read_text())
    assert all(r[m] == {"skipped": "time budget spent"} for r in record["rows"] for m in ("exact", "adaptive", "pso"))
    assert (tmp_path / "gpu-tiny.json.previous").exists()
