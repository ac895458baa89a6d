"""The command line as a thin layer: help that states every default, "did you mean", the verdict
as an exit code, progress in one form, no JAX setting changed by an import, no long functions."""

import ast
import inspect
import io
import json
import subprocess
import sys

import pytest

import jaxrepair as jr
from jaxrepair import cli
from jaxrepair.records import Progress, _progress


def _run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv, hint", [
    (["repiar", "german-sex"], "did you mean 'repair'?"),
    (["zoo", "lst"], "did you mean 'list'?"),
    (["repair", "german-sex", "--stratgy", "pso"], "--stratgy -> --strategy"),
    (["repair", "german-sx"], "did you mean 'german-sex'?"),
    (["repair", "german-sex", "--strategy", "psoo"], "did you mean 'pso'?"),
    (["repair", "german-sex", "--method", "ace-finetun"], "did you mean 'ace-finetune'?"),
])
def test_a_mistyped_name_gets_a_suggestion(capsys, argv, hint, tmp_path):
    code, _, err = _run(argv + ["--out", str(tmp_path / "out")] if argv[0] == "repair" else argv, capsys)
    assert code == cli.EXIT_BAD_INPUT and hint in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_repair_help_states_every_default(capsys):
    _, out, _ = _run(["repair", "--help"], capsys)
    text = " ".join(out.split())
    text = text[text.index("options:"):]  # the option list, not the usage line
    for flag in ("--strategy", "--space", "--a A", "--bounds", "--max-drop", "--generations", "--population",
                 "--score", "--k K", "--property", "--pareto-seeds", "--repair-samples"):
        at = text.index(flag)
        assert "default" in text[at: at + 400], flag
    assert "fairness pso" in text and "nsga2/nsga3 64" in text  # read from PRESETS and STRATEGIES
    _, out, _ = _run(["--help"], capsys)
    assert "onnx" in out and "verify (VNN-COMP" in " ".join(out.split()) and "10 unsafe" in out


def test_verify_exit_code_reports_the_verdict(capsys, tmp_path):
    argv = ["verify", "acasxu-n2_9-phi8", "--property", "acasxu:phi2", "--timeout", "20", "--out", str(tmp_path)]
    code, _, _ = _run(argv, capsys)
    assert code == 0  # without --exit-code a decided run exits 0
    code, out, _ = _run(argv + ["--exit-code", "--json"], capsys)
    assert json.loads(out)["verdict"] == "unsafe" and code == cli.VERDICT_EXIT["unsafe"] == 10


def test_commands_return_their_record_no_global_channel(capsys):
    assert not hasattr(cli, "_RESULT") and not hasattr(cli, "_result")
    assert isinstance(cli.cmd_methods(cli.build_parser().parse_args(["methods"])), dict)
    capsys.readouterr()


def test_no_cli_function_is_200_lines():
    tree = ast.parse(inspect.getsource(cli))
    long = [(f.name, f.end_lineno - f.lineno + 1) for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 >= 200]
    assert not long, long


def test_importing_jaxrepair_changes_no_jax_setting():
    code = ("import jax, json; keys = [k for k in jax.config.values]; before = {k: repr(jax.config.values[k]) for k in keys}; "
            "import jaxrepair; after = {k: repr(jax.config.values[k]) for k in keys}; "
            "print(json.dumps(sorted(k for k in keys if before[k] != after[k])))")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("JAXREPAIR_NO_COMPILE", "JAX_COMPILATION"))}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []
    assert jr.compile_cache.enable is not None  # the explicit switch


def test_progress_plain_lines_are_throttled_and_the_last_always_shown(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("JAXREPAIR_PROGRESS", "plain")
    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(clock))
    p = Progress("work", total=100)
    for i in range(100):
        p.update(i + 1, "steps")
    p.close()
    lines = err.getvalue().splitlines()
    # the clock moves 1 s per update: a line at the first update, then one every EVERY_S seconds, and the end
    assert 100 // _progress.EVERY_S - 2 <= len(lines) <= 100 // _progress.EVERY_S + 3
    assert lines[0].startswith("[work] 1/100 steps") and "left" not in lines[0]  # no rate from one point
    assert "about 2" in lines[3] or "left" in lines[3]
    assert lines[-1].startswith("[work] 100/100 steps") and lines[-1].endswith("done")


def test_progress_rate_ignores_the_first_step(monkeypatch):
    """The first update pays for compilation; the time left comes from the steps after it."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("JAXREPAIR_PROGRESS", "plain")
    times = iter([0.0, 50.0, 51.0])  # start, first update (compile: 50 s), second update 1 s later
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(times))
    p = Progress("search", total=11, every=0.0)
    p.update(1)
    p.update(2)
    assert "about 9.0s left" in err.getvalue().splitlines()[-1]  # 1 s per step x 9 steps, not 25 s per step


def test_progress_bar_redraws_one_line_and_off_is_silent(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("JAXREPAIR_PROGRESS", "bar")
    p = Progress("verify", total=4)
    for i in range(4):
        p.update(i + 1)
    p.close()
    text = err.getvalue()
    assert text.count("\n") == 1 and "\r" in text and "####" in text
    monkeypatch.setenv("JAXREPAIR_PROGRESS", "off")
    err.truncate(0)
    q = Progress("x", total=2)
    q.update(1)
    q.close()
    assert err.getvalue().strip("\x00") == ""


def test_repair_choose_runs_the_demos_mode_and_reports_locality(capsys, tmp_path):
    """--choose keeps the method chosen on the select split (never the test split) and says how many
    hidden units the repair changes."""
    code, out, _ = _run(["repair", "german-sex", "--choose", "ace-pso,prune", "--json",
                         "--out", str(tmp_path)], capsys)
    assert code == 0
    rec = json.loads(out)
    rows = rec["chosen_on_select"]
    assert [r["method"] for r in rows] == ["ace-pso", "prune"]
    ok = [r for r in rows if r["within_budget"]]
    assert rec["method"] == min(ok, key=lambda r: r["select_violation"])["method"]
    loc = rec["locality"]
    assert loc["hidden_units"] == 48 and loc["units_changed"] == len(rec["selected"]) and loc["local"]


def test_locality_calls_a_whole_network_repair_not_local():
    bench = jr.zoo.load("german-sex")
    r = jr.repair.RepairResult("t", "finetune-all", bench.model, [], {}, {}, {}, {}, {}, {})
    assert jr.repair.locality(bench.model, r) == {"units_changed": 48, "hidden_units": 48, "share": 1.0, "local": False}


def test_choose_refuses_one_methods_settings(capsys, tmp_path):
    code, _, err = _run(["repair", "german-sex", "--choose", "ace-pso,prune", "--k", "3", "--out", str(tmp_path / "o")],
                        capsys)
    assert code == cli.EXIT_BAD_INPUT and "--k cannot be combined" in err and not (tmp_path / "o").exists()
    code, _, err = _run(["repair", "german-sex", "--choose", "ace-pso,nope", "--out", str(tmp_path / "o")], capsys)
    assert code == cli.EXIT_BAD_INPUT and "unknown method 'nope'" in err


def test_sweep_on_ray_without_the_extra_is_a_clear_error(capsys, tmp_path, monkeypatch):
    cfg = tmp_path / "s.toml"
    cfg.write_text(f"store = '{tmp_path / 's.sqlite'}'\n[grid]\nentry = ['german-sex']\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if `pip install "jaxrepair[ray]"` had not been run
    code, _, err = _run(["sweep", str(cfg), "--ray"], capsys)
    assert code == cli.EXIT_BAD_INPUT and "pip install 'jaxrepair[ray]'" in err
    assert not (tmp_path / "s.sqlite").exists()  # refused before the store is touched


def test_an_option_of_another_command_is_named_as_such(capsys):
    from jaxrepair import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "german-sex", "--out", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--out is an option of" in err and "localize" in err and "not of this command" in err
    assert "--out -> --out" not in err
