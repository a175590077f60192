"""Every command documents itself, and help never loads the model stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pyrite.cli import cli
from tests.conftest import pyrite_cmd

HEAVY = ("torch", "sentence_transformers", "transformers")
DOCUMENTED = ["init", "kb", "create", "get", "update", "delete", "list-entries", "search", "index", "worker",
              "serve", "mcp"]


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            out.extend(walk(command.commands[name], path + (name,)))
    return out


COMMANDS = walk(cli)


def test_tree_has_the_documented_commands() -> None:
    paths = {" ".join(p) for p, _ in COMMANDS}
    for name in DOCUMENTED:
        assert name in paths
    for sub in ["kb create", "kb list", "kb remove", "index build", "index sync", "index embed"]:
        assert sub in paths
    assert len(COMMANDS) >= 19


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "pyrite" for p, _ in COMMANDS])
def test_every_command_has_help(path: tuple[str, ...], command: click.Command) -> None:
    assert command.help and command.help.strip(), f"`pyrite {' '.join(path)}` has no help text"
    assert command.get_short_help_str().strip()
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help and param.help.strip(), f"option {param.opts} of `pyrite {' '.join(path)}` has no help"


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "pyrite" for p, _ in COMMANDS])
def test_help_exits_0(path: tuple[str, ...], command: click.Command) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(cli, [*path, flag])
        assert result.exit_code == 0, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Usage:" in result.stdout
        first_line = command.help.strip().splitlines()[0]  # type: ignore[union-attr]
        assert first_line[:30] in " ".join(result.stdout.split())


def test_root_help_lists_every_command() -> None:
    out = CliRunner().invoke(cli, ["--help"]).stdout
    for name in cli.commands:  # type: ignore[attr-defined]
        assert name in out


def test_help_touches_no_database(pyrite_home: Path) -> None:
    for path, _ in COMMANDS:
        CliRunner().invoke(cli, [*path, "--help"])
    assert not (pyrite_home / "index.db").exists()


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "pyrite" in result.stdout


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRITE_")}
    env.update(PYRITE_HOME=str(home), PYRITE_EMBED_PROVIDER="local")  # the default provider
    return env


def test_pyrite_help_subprocess_imports_no_torch(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", *pyrite_cmd("--help")[1:]],
                          env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage:" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "pyrite" in imported  # the importtime output really was parsed
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


SCRIPT = """
import sys
from click.testing import CliRunner
from pyrite.cli import cli
for args in {args!r}:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))
"""


def test_help_of_every_command_imports_no_torch(tmp_path: Path) -> None:
    args = [[*p, "--help"] for p, _ in COMMANDS]
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(args=args, heavy=HEAVY)],
                          env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
