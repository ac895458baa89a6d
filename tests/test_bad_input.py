"""Bad input, as a new user or an adversary would give it: every case exits with the documented code
(2 bad input, 130 interrupted), prints a message naming what was wrong, and changes no file.

Every case runs ``jaxrepair`` in-process on a folder of the user's files; the folder's bytes are
compared before and after, and no run folder may appear."""

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import jaxrepair as jr
from jaxrepair import cli

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    bench = jr.zoo.load("german-sex")
    jr.save(bench.model, d / "german.npz")
    ds = jr.data.load_tabular("german")
    x = np.concatenate([s.x for s in ds.splits.values()])[:200]
    y = np.concatenate([s.y for s in ds.splits.values()])[:200]
    header = ",".join(ds.columns + ["good"])
    rows = "\n".join(",".join(f"{v:g}" for v in r) + f",{int(t)}" for r, t in zip(x, y))
    (d / "german.csv").write_text(header + "\n" + rows + "\n")
    (d / "float_labels.csv").write_text(header + "\n" + "\n".join(",".join(f"{v:g}" for v in r) + ",0.5" for r in x[:20]) + "\n")
    (d / "ragged.csv").write_text(header + "\n" + rows.split("\n")[0] + "\n1,2,3\n")
    (d / "narrow.csv").write_text("a,b,good\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(30)) + "\n")
    np.savez(d / "x_only.npz", x=x)
    lines_ = (header + "\n" + rows).split("\n")
    (d / "twice.csv").write_text(lines_[0].replace("sex", "age") + "\n" + "\n".join(lines_[1:]) + "\n")
    for name, cell in {"blank": "", "na": "NA", "nan": "nan", "inf": "inf", "text": "abc"}.items():
        body = [r.split(",") for r in lines_[1:]]
        body[3][2] = cell  # line 5, column 2
        (d / f"cell_{name}.csv").write_text(lines_[0] + "\n" + "\n".join(",".join(r) for r in body) + "\n")
    nan_x = x.copy()
    nan_x[7, 3] = np.nan
    np.savez(d / "nan_x.npz", x=nan_x, y=y)
    np.savez(d / "dup_columns.npz", x=x[:, :2], y=y, columns=np.array(["a", "a"]))
    (d / "split.json").write_text("{}\n")
    bad_model = jr.load(d / "german.npz")
    params = bad_model.params()
    leaf = next(k for k, v in params.items() if "kernel" in v)
    params[leaf]["kernel"] = np.array(params[leaf]["kernel"]).copy()
    params[leaf]["kernel"][0, 0] = np.inf
    jr.save(jr.models.Network(bad_model.graph, params), d / "inf_model.npz")
    vnn = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
    (d / "nan.vnnlib").write_text(vnn + "(assert (<= X_0 nan))\n(assert (>= X_0 0.0))\n(assert (>= Y_0 0.0))\n")
    (d / "huge.vnnlib").write_text(vnn + "(assert (<= X_0 1.0))\n(assert (>= X_0 0.0))\n(assert (>= Y_0 1e999))\n")
    (d / "twice.vnnlib").write_text(vnn + "(declare-const X_0 Real)\n(assert (<= X_0 1.0))\n")
    text = jr.convert.nnet_text(jr.data.load_acasxu(1, 1))
    (d / "extra.nnet").write_text(text + "0.5\n")
    lines = text.splitlines()
    header_at = next(i for i, ln in enumerate(lines) if not ln.startswith("//"))
    (d / "header.nnet").write_text("\n".join(lines[:header_at] + [lines[header_at].rstrip(",") + ",7,"] + lines[header_at + 1:]) + "\n")
    nan_w = list(lines)
    nan_w[header_at + 7] = "nan," + ",".join(nan_w[header_at + 7].split(",")[1:])
    (d / "nan_weight.nnet").write_text("\n".join(nan_w) + "\n")
    zero_range = list(lines)
    zero_range[header_at + 6] = "0.0," + ",".join(zero_range[header_at + 6].split(",")[1:])
    (d / "zero_range.nnet").write_text("\n".join(zero_range) + "\n")
    short = list(lines)
    row = header_at + 7  # the first weight row of layer 1
    short[row] = ",".join(short[row].rstrip(",").split(",")[:-1]) + ","
    (d / "short_row.nnet").write_text("\n".join(short) + "\n")
    shutil.copy(FIX / "keras_cnn.h5", d / "wrong_kernel.h5")
    import h5py

    with h5py.File(d / "wrong_kernel.h5", "r+") as f:
        del f["model_weights/c2/c2/kernel"]
        f["model_weights/c2/c2/kernel"] = np.zeros((3, 3, 5, 6), np.float32)
    shutil.copy(FIX / "torch_mlp.onnx", d / "model.onnx")
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(FIX / "torch_mlp.onnx"))
    init = m.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(d / "nan_init.onnx"))
    shutil.copy(FIX / "keras_cnn.h5", d / "nan_kernel.h5")
    with h5py.File(d / "nan_kernel.h5", "r+") as f:
        k = f["model_weights/c2/c2/kernel"]
        k[0, 0, 0, 0] = np.nan
    other = sqlite3.connect(d / "other.sqlite")
    other.execute("CREATE TABLE people (name TEXT)")
    other.commit()
    other.close()
    (d / "hf_noconfig").mkdir()
    shutil.copy(FIX / "hf" / "gpt2" / "model.safetensors", d / "hf_noconfig" / "model.safetensors")
    shutil.copytree(FIX / "hf" / "gpt2", d / "hf_wide")
    cfg = json.loads((d / "hf_wide" / "config.json").read_text())
    (d / "hf_wide" / "config.json").write_text(json.dumps({**cfg, "n_embd": 32}))
    (d / "empty.txt").write_text("")
    (d / "a_file").write_text("not a directory\n")
    for name, body in {
        "setting.toml": "[grid]\nentry = ['german-sex']\n[setting]\ngenerations = 2\n",
        "stroe.toml": "stroe = 'x.sqlite'\n[grid]\nentry = ['german-sex']\n",
        "bogus.toml": "[grid]\nentry = ['german-sex']\nstrategy = ['pso', 'bogus']\n",
        "negk.toml": "[grid]\nentry = ['german-sex']\nk = [-2]\n",
        "biga.toml": "[grid]\nentry = ['german-sex']\na = [1.5]\n",
        "prop.toml": "[grid]\nentry = ['german-sex']\nproperty = ['backdoor']\n",
        "gens.toml": "[grid]\nentry = ['german-sex']\n[settings]\ngenerations = 0\n",
        "unwritable.toml": "store = '/proc/jaxrepair/x.sqlite'\n[grid]\nentry = ['german-sex']\n",
        "infbounds.toml": "[grid]\nentry = ['german-sex']\n[settings]\nbounds = [-inf, 1.0]\n",
        "nana.toml": "[grid]\nentry = ['german-sex']\na = [nan]\n",
        "twice.toml": "[grid]\nentry = ['german-sex', 'german-sex']\n",
    }.items():
        (d / name).write_text(body)
    return d


def _snapshot(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


M, CSV = "{d}/german.npz", "{d}/german.csv"
OUT = ["--out", "{d}/out"]
CASES = [
    # silent wrong results, now refused
    (["localize", "german-sex", "--effect", "target:5", *OUT], "class 5 does not exist"),
    (["localize", "german-sex", "--effect", "fairness:99:0,1", *OUT], "sensitive column"),
    (["localize", "german-sex", "--effect", "fairness:8", *OUT], "needs a column and its values"),
    (["localize", "german-sex", "--effect", "fairness:x:0,1", *OUT], "the column must be a non-negative integer"),
    (["localize", "german-sex", "--effect", "target:1:softmax", *OUT], "--effect 'target:1:softmax'"),
    (["localize", "german-sex", "--effect", "bogus", *OUT], "unknown effect"),
    (["localize", "german-sex", "--sites", "nope", *OUT], "unknown site"),
    (["evaluate", M, "--data", "{d}/float_labels.csv", "--label", "good"], "class indices"),
    (["repair", "german-sex", "--k", "-3", *OUT], "argument --k: must be at least 1, got -3"),
    (["repair", "german-sex", "--k", "0", *OUT], "argument --k: must be at least 1, got 0"),
    (["repair", "german-sex", "--k", "500", *OUT], "k=500, but the candidate sites"),
    (["repair", "german-sex", "--pareto", "2.0", *OUT], "every a must be in"),
    (["repair", "german-sex", "--a", "1.5", *OUT], "argument --a"),
    (["repair", "german-sex", "--max-drop", "-0.1", *OUT], "argument --max-drop"),
    (["repair", "german-sex", "--generations", "0", *OUT], "argument --generations"),
    (["repair", "german-sex", "--population", "2", *OUT], "argument --population"),
    (["repair", "german-sex", "--bounds", "2", "1", *OUT], "LOW < HIGH"),
    (["repair", "german-sex", "--space", "delta", "--bounds", "-1", *OUT], "delta --bounds"),
    (["repair", "german-sex", "--strategy", "bogus", *OUT], "unknown strategy"),
    (["repair", "german-sex", "--preset", "nope", *OUT], "unknown preset"),
    (["repair", "german-sex", "--repair-samples", "0", *OUT], "argument --repair-samples"),
    (["repair", "german-sex", "--seed", "-1", *OUT], "argument --seed"),
    (["repair", "german-sex", "--pareto-seeds", "200000", *OUT], "argument --pareto-seeds"),
    (["repair", M, *OUT], "needs --entry ZOO_NAME, or --data FILE"),
    (["repair", M, "--data", CSV, "--label", "good", *OUT], "needs --sensitive"),
    (["repair", M, "--data", CSV, "--label", "good", "--sensitive", "nope", *OUT], "'nope' is not a column"),
    (["repair", M, "--data", CSV, "--label", "good", "--sensitive", "sex:1", *OUT], "at least two distinct values"),
    (["repair", "german-sex", "--out", "{d}/a_file"], "is an existing file"),
    # tracebacks before, messages now
    (["localize", "german-sex", "--samples", "-5", *OUT], "argument --samples"),
    (["localize", "german-sex", "--num-values", "1000000", *OUT], "argument --num-values"),
    (["evaluate", M, "--entry", "census-sex"], "inputs of shape (20,)"),
    (["evaluate", M], "needs --entry ZOO_NAME"),
    (["evaluate", "{d}/missing.npz"], "neither a zoo entry"),
    (["evaluate", M, "--data", "{d}/missing.csv"], "no such data file"),
    (["evaluate", M, "--data", CSV, "--label", "nope"], "label column 'nope'"),
    (["evaluate", M, "--data", "{d}/ragged.csv", "--label", "good"], "line 3"),
    (["evaluate", M, "--data", "{d}/narrow.csv", "--label", "good"], "has 2 feature columns"),
    (["evaluate", M, "--data", "{d}/x_only.npz"], "no label array 'y'"),
    # a table read wrongly without a word before: duplicate names, missing cells, mixed columns, inf
    (["evaluate", M, "--data", "{d}/twice.csv", "--label", "good", "--sensitive", "age"],
     "line 1: the column name 'age' appears twice (columns 8 and 12)"),
    (["evaluate", M, "--data", "{d}/cell_blank.csv", "--label", "good"], "column 'credit_history' has 1 missing value(s) (line 5: '')"),
    (["evaluate", M, "--data", "{d}/cell_na.csv", "--label", "good"], "(line 5: 'NA')"),
    (["evaluate", M, "--data", "{d}/cell_nan.csv", "--label", "good"], "(line 5: 'nan')"),
    (["evaluate", M, "--data", "{d}/cell_inf.csv", "--label", "good"], "column 'credit_history' holds an infinite value (line 5"),
    (["evaluate", M, "--data", "{d}/cell_text.csv", "--label", "good"], "column 'credit_history' mixes numbers"),
    (["evaluate", M, "--data", "{d}/cell_text.csv", "--label", "good", "--categorical", "nope"], "categorical column 'nope'"),
    (["evaluate", M, "--data", "{d}/nan_x.npz"], "'x' holds 1 NaN/inf value(s) in 1 row(s), the first at row 7, column 3"),
    (["evaluate", M, "--data", "{d}/dup_columns.npz"], "'columns' names 'a' more than once"),
    (["evaluate", M, "--data", CSV, "--label", "good", "--save-split", "{d}/split.json"], "the file exists"),
    (["evaluate", "{d}/inf_model.npz", "--entry", "german-sex"], "contains 1 NaN/inf value(s)"),
    (["verify", "{d}/extra.nnet", "--vnnlib", "{d}/nan.vnnlib", *OUT], "nan.vnnlib, line 3: the constant 'nan' is not a finite"),
    (["verify", "{d}/extra.nnet", "--vnnlib", "{d}/huge.vnnlib", *OUT], "line 5: the constant '1e999'"),
    (["verify", "{d}/extra.nnet", "--vnnlib", "{d}/twice.vnnlib", *OUT], "X_0 is declared twice"),
    (["convert", "{d}/nan_weight.nnet"], "the layer 1 weight line holds nan, not a finite number"),
    (["convert", "{d}/zero_range.nnet"], "range 0 is 0.0; normalisation divides by it"),
    (["convert", "{d}/nan_init.onnx"], "holds 1 NaN value(s)"),
    (["convert", "{d}/nan_kernel.h5"], "contains 1 NaN/inf value(s)"),
    (["convert", "{d}/missing.onnx"], "does not exist"),
    (["convert", "{d}/extra.nnet"], "after the last layer"),
    (["convert", "{d}/header.nnet"], "value(s), expected 4"),
    (["convert", "{d}/short_row.nnet"], "layer 1 weight line has 4 value(s), expected 5"),
    (["convert", "{d}/wrong_kernel.h5"], "node 'c2' (conv2d): inputs of shape"),
    (["convert", "{d}/model.onnx", "--out", "{d}/german.npz"], "exists"),
    (["sweep", "{d}/setting.toml"], "unknown top-level key(s) or table(s) ['setting']"),
    (["sweep", "{d}/stroe.toml"], "['stroe']"),
    (["sweep", "{d}/bogus.toml"], "unknown strategy 'bogus'"),
    (["sweep", "{d}/negk.toml"], "k must be positive integers"),
    (["sweep", "{d}/biga.toml"], "a must be numbers in [0, 1]"),
    (["sweep", "{d}/prop.toml"], "property ['backdoor'] does not apply"),
    (["sweep", "{d}/gens.toml"], "setting generations = 0"),
    (["sweep", "{d}/unwritable.toml"], "cannot open or create the sweep store"),
    (["sweep", "{d}/missing.toml"], "no such sweep config"),
    (["sweep", "{d}/infbounds.toml"], "setting bounds"),
    (["sweep", "{d}/nana.toml"], "a must be numbers in [0, 1]"),
    (["sweep", "{d}/twice.toml"], "grid key entry lists 'german-sex' more than once"),
    (["report", "{d}/other.sqlite"], "not a jaxrepair sweep store"),
    (["report", "{d}/empty.txt"], "not a jaxrepair sweep store"),
    (["report", "{d}/missing.sqlite"], "no such sweep store"),
    (["cf-fairness", "census-nope", *OUT], "fairness zoo entry"),
    (["evaluate", "{d}/hf_noconfig"], "no config.json"),
    (["evaluate", "{d}/hf_wide"], "but config.json implies (50, 32)"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0", "repair", "german-sex", *OUT],
     "HOST:PORT"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_exits_2_with_a_message_and_changes_nothing(user_dir, capsys, argv, message):
    before = _snapshot(user_dir)
    argv = [a.format(d=user_dir) for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT, err
    assert message in err, err
    assert "Traceback" not in err
    assert _snapshot(user_dir) == before  # no file changed, none added (no empty run folder either)


def test_interrupt_exits_130_without_a_traceback(user_dir, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_zoo", interrupted)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_zoo(parser(), interrupted))
    assert cli.main(["zoo", "list"]) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def _with_zoo(p, fn):
    for action in p._subparsers._group_actions:
        action.choices["zoo"].set_defaults(fn=fn)
    return p


def test_commands_without_processes_do_not_start_the_distributed_runtime(capsys):
    # `zoo list` never joins a multi-process run, so an unreachable coordinator cannot make it hang
    assert cli.main(["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0", "zoo", "list"]) == 0
    assert "census-sex" in capsys.readouterr().out


def test_convert_never_writes_over_its_input(user_dir, capsys):
    before = _snapshot(user_dir)
    assert cli.main(["convert", str(user_dir / "model.onnx"), "--to", "onnx"]) == 0
    assert (user_dir / "model.converted.onnx").exists()
    after = _snapshot(user_dir)
    assert {k: v for k, v in after.items() if k in before} == before
    (user_dir / "model.converted.onnx").unlink()


def test_version_and_help_show_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and jr.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    text = capsys.readouterr().out
    assert "[grid]" in text and "store" in text and "[settings]" in text
    with pytest.raises(SystemExit):
        cli.main(["localize", "--help"])
    assert "(default: 16)" in capsys.readouterr().out


def test_json_is_strict():
    text = jr.records.dumps({"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": np.arange(2)})
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": [0, 1]}
    assert "NaN" not in text and "Infinity" not in text


def test_written_files_respect_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        p = jr.records.write_json(tmp_path / "r.json", {"x": 1})
    finally:
        os.umask(old)
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)


def test_json_flag_prints_only_the_record(user_dir, capsys):
    assert cli.main(["zoo", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert {e["name"] for e in json.loads(out)["entries"]} >= {"census-sex", "german-sex"}
    assert cli.main(["evaluate", str(user_dir / "german.npz"), "--data", str(user_dir / "german.csv"), "--label", "good",
                     "--sensitive", "sex", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["rows"] == 40 and "test split: 40 of 200 rows" in rec["measured_on"]  # the rows a repair reports on
    assert rec["sensitive"]["column"] == "sex" and rec["degenerate"] is None
    assert 0 <= rec["fairness_violation"]["ci95"][0] <= rec["fairness_violation"]["rate"] <= rec["fairness_violation"]["ci95"][1]
    assert cli.main(["evaluate", str(user_dir / "german.npz"), "--data", str(user_dir / "german.csv"), "--label", "good",
                     "--rows", "all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 200


def test_table_reading_options_and_the_saved_split(user_dir, tmp_path, capsys):
    """--missing drop drops exactly the rows with a hole; --categorical reads a column as codes; the
    saved split names the file rows of every split, and a new split seed moves them."""
    ds = jr.data.load_user_table(user_dir / "cell_blank.csv", label="good", missing="drop")
    assert ds.dropped == [5] and sum(len(s.y) for s in ds.splits.values()) == 199
    full = jr.data.load_user_table(user_dir / "german.csv", label="good")
    table = np.concatenate([s.x for s in full.splits.values()])[np.argsort(np.concatenate(list(full.rows.values())))]
    for k, split in ds.splits.items():  # rows index the file's data rows (0-based), in the split's order
        np.testing.assert_array_equal(split.x, table[ds.rows[k]])
    assert 3 not in np.concatenate(list(ds.rows.values()))  # line 5 = data row 3
    cat = jr.data.load_user_table(user_dir / "cell_text.csv", label="good", categorical=["credit_history"])
    assert "credit_history" in cat.categories and "abc" in cat.categories["credit_history"]
    assert jr.data.load_user_table(user_dir / "german.csv", label="good").categories == {}
    other = jr.data.load_user_table(user_dir / "german.csv", label="good", split_seed=1)
    assert other.rows["test"].tolist() != full.rows["test"].tolist()
    save = tmp_path / "split.json"
    assert cli.main(["evaluate", str(user_dir / "german.npz"), "--data", str(user_dir / "cell_text.csv"), "--label", "good",
                     "--categorical", "credit_history", "--save-split", str(save), "--split-seed", "1"]) == 0
    err = capsys.readouterr().err
    assert "read as categorical (integer codes): credit_history" in err and "split seed 1: train 120 / val 40 / test 40" in err
    rec = json.loads(save.read_text())
    assert rec["split_seed"] == 1 and rec["rows"]["test"] == other.rows["test"].tolist()
    assert rec["categorical"] == ["credit_history"]
