"""Every CLI command is documented in docs/cli.md, and every setting in docs/embedding.md."""

from pathlib import Path

import click
import pytest

from pyrite.cli import cli
from pyrite.config import SETTINGS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _commands(group: click.Group, prefix: str = "pyrite") -> list[str]:
    out = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            out.extend(_commands(command, path))
        else:
            out.append(path)
    return out


@pytest.mark.parametrize("command", _commands(cli))
def test_command_in_cli_docs(command: str) -> None:
    assert command in (DOCS / "cli.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.key)
def test_setting_documented(setting) -> None:
    text = (DOCS / "embedding.md").read_text(encoding="utf-8") + (DOCS / "server.md").read_text(encoding="utf-8")
    assert setting.env in text, f"{setting.env} is not documented"
