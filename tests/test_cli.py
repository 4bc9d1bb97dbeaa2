"""The command line: exit codes, fast `--help`, and every command and option documented in docs/COMMANDS.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from audit.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS_DOC = README.parent / "docs" / "COMMANDS.md"      # the option reference (the README links to it)


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_help_does_not_import_heavy_libraries():
    code = ("import sys, audit.cli; audit.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch','polars','pyarrow','datasets','PIL','numpy','transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_option_has_help_and_an_entry_in_the_commands_doc(command):
    text = COMMANDS_DOC.read_text(encoding="utf-8")
    heading = re.search(rf"^(#+) .*`shortcut-audit {command}`.*$", text, re.M)
    assert heading, f"docs/COMMANDS.md has no section for `{command}`"
    rest = text[heading.end():]
    end = re.search(rf"^#{{1,{len(heading.group(1))}}} ", rest, re.M)
    # this command's section up to the next one, and the options every command shares (above the first)
    doc = text[:re.search(r"^#+ .*`shortcut-audit ", text, re.M).start()] + rest[:end.start() if end else None]
    for action in _subparsers()[command]._actions:
        if action.dest == "help":
            continue
        assert action.help and action.help.strip(), f"{command} {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            if flag.startswith("--"):
                documented = re.search(rf"`(-\w/)?{re.escape(flag)}(?![\w-])", doc)
                assert documented, f"the `{command}` section of docs/COMMANDS.md does not document `{flag}`"


def test_synth_list_and_run(tmp_path, capsys):
    assert main(["synth", "--list"]) == 0
    out = capsys.readouterr().out
    assert "leadin" in out and "clean" in out
    assert main(["synth", "--env", "clean", "--n", "5", "-o", str(tmp_path / "s")]) == 0
    assert "wrote 5 pairs of `clean` in format `pairs`" in capsys.readouterr().out


def test_synth_errors(tmp_path, capsys):
    assert main(["synth", "--env", "nope", "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("Error: unknown environment `nope`; valid: clean, leadin,")
    assert main(["synth", "--env", "clean", "--p", "1.5", "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "Error: `--p` must be a probability in [0, 1], got 1.5"
    assert main(["synth", "--env", "clean"]) == 1
    assert capsys.readouterr().err.strip() == "Error: `-o/--out` is required: the folder to write the environment into"
    assert main(["synth", "--env", "clean", "--format", "xml", "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().startswith("Error: unknown format `xml`; valid: vlfeedback")


def test_ingest_prints_the_report(tmp_path, capsys):
    assert main(["synth", "--env", "leadin", "--n", "12", "--format", "rlhf-v", "-o", str(tmp_path / "s")]) == 0
    assert main(["ingest", str(tmp_path / "s"), "-o", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "format: rlhf-v   records in: 12   rows out: 12   ok: 12" in out
    assert f"pairs table: {tmp_path / 'p' / 'pairs.parquet'}" in out


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).parent / "shortcut-audit"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    res = subprocess.run([str(exe), "ingest", str(tmp_path / "missing"), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.startswith("Error: ") and "Traceback" not in res.stderr


def test_the_app_is_installed_under_a_unique_name_and_every_package_is_listed(tmp_path):
    """`app` as a top-level package collides with any other project's `app`; a package folder missing
    from pyproject's list would be missing from the wheel (audit/train once was)."""
    tomllib = pytest.importorskip("tomllib")      # Python 3.11+

    root = README.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(root).parts) for p in (root / "audit").rglob("*.py")}
    assert on_disk <= listed and "shortcut_audit_app" in listed and "app" not in listed
    code = ("import importlib.util as u; print(u.find_spec('app') is None, "
            "u.find_spec('shortcut_audit_app').submodule_search_locations[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.split() == ["True", str(root / "app")]


def test_the_app_is_served_headless_unless_asked_to_open_a_browser(tmp_path):
    from audit.cli import app_command
    from audit.config import AppConfig

    (tmp_path / "audited.parquet").write_bytes(b"")
    cmd, env = app_command(AppConfig(audit=tmp_path))
    assert cmd[cmd.index("--server.headless") + 1] == "true" and env["SHORTCUT_AUDIT_DIR"] == str(tmp_path.resolve())
    cmd, _ = app_command(AppConfig(audit=tmp_path, open=True))
    assert cmd[cmd.index("--server.headless") + 1] == "false"


def test_scheme_choices_in_help_are_the_registered_schemes():
    from audit.config import SCHEME_CHOICES
    from audit.schemes import SCHEMES

    assert SCHEME_CHOICES == tuple(SCHEMES)
    out = subprocess.run([sys.executable, "-m", "audit", "score", "--help"], capture_output=True, text=True).stdout
    assert "{sfc,sfc-residual,debias,ipw,jtt,none}" in out and "reward model (audit your own RM with --rm)" in out
