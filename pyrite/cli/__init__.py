"""The `pyrite` command: a click group whose commands live one group per module."""

from __future__ import annotations

import sys
from typing import Any

import click

from pyrite.cli import entries, index, kb, links, runtime, search
from pyrite.cli.common import PyriteGroup, settings_options


@click.group(cls=PyriteGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(file_okay=False), default=None, envvar="PYRITE_HOME",
              help="Folder holding config.yaml and index.db (env PYRITE_HOME, default ~/.pyrite).")
@settings_options
@click.version_option(package_name="pyrite", prog_name="pyrite")
@click.pass_context
def cli(ctx: click.Context, home: str | None, **flags: Any) -> None:
    """pyrite: a local-first knowledge base of markdown files, searchable by words and by meaning."""
    ctx.obj = {"home": home, "flags": flags}


cli.add_command(kb.init)
cli.add_command(kb.kb)
for command in entries.COMMANDS:
    cli.add_command(command)
cli.add_command(search.search)
cli.add_command(index.index)
index.index.add_command(links.check)
for command in links.COMMANDS:
    cli.add_command(command)
for command in runtime.COMMANDS:
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="pyrite"))
