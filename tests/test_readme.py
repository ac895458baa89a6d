"""The README's "Library in one screen" block runs exactly as printed."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(title: str) -> str:
    text = README.read_text()
    section = text[text.index(f"# {title}"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_library_in_one_screen_runs_as_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _block("Library in one screen")
    scope: dict = {}
    exec(compile(code, "README.md (Library in one screen)", "exec"), scope)
    # what the block claims, checked on what it computed
    assert scope["result"].config["preset"] == "fairness"
    assert scope["result"].after["violation"] < scope["result"].before["violation"]
    assert scope["out"]["solution"].shape[0] == 3
    assert (tmp_path / "repaired.onnx").exists()
    assert "violation (test)" in capsys.readouterr().out


def test_verification_block_runs_as_printed(capsys):
    code = _block("Verification and certified repair")
    scope: dict = {}
    exec(compile(code, "README.md (Verification)", "exec"), scope)
    assert scope["v"].verdict in ("safe", "unsafe")
    out = capsys.readouterr().out
    assert out.split()[0] == scope["v"].verdict


def test_spurious_block_runs_as_printed(capsys):
    code = _block("A spurious correlation on a ResNet")
    scope: dict = {}
    exec(compile(code, "README.md (spurious)", "exec"), scope)
    colours = scope["colours"]
    assert scope["before"].matched(colours) > 0.3  # the stand-in network learned the border
    assert scope["after"].matched(colours) < 0.1 * scope["before"].matched(colours)
    assert "border colour's ACE on its class" in capsys.readouterr().out
