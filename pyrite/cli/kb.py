"""`pyrite init` and `pyrite kb create|list|remove`."""

from __future__ import annotations

import os

import click

from pyrite.cli.common import PyriteGroup, emit_json, format_option, get_core, get_settings, plural
from pyrite.config import KB_NAMES, write_default_config


@click.command()
@format_option
@click.pass_context
def init(ctx: click.Context, fmt: str) -> None:
    """Create the pyrite home: config.yaml (commented defaults) and the index database."""
    settings = get_settings(ctx)
    settings.home.mkdir(parents=True, exist_ok=True)
    wrote = write_default_config(settings.config_path)
    core = get_core(ctx)
    info = {"home": str(settings.home), "config": str(settings.config_path), "config_created": wrote,
            "database": str(settings.db_path), "semantic_search": core.provider.enabled,
            "note": core.provider.why_disabled()}
    if fmt == "json":
        emit_json(info)
        return
    click.echo(f"pyrite home: {settings.home}")
    click.echo(f"  config:   {settings.config_path}{'' if wrote else ' (kept)'}")
    click.echo(f"  index:    {settings.db_path}")
    if info["note"]:
        click.echo(f"  note:     {info['note']}")


@click.group(cls=PyriteGroup)
def kb() -> None:
    """Create, list and remove knowledge bases (folders of markdown files)."""


@kb.command("create")
@click.argument("name")
@click.option("--path", "path", default=None, type=click.Path(file_okay=False),
              help="Folder of the KB (default $PYRITE_HOME/kbs/NAME); existing files are indexed.")
@click.option("--create", "make", is_flag=True, help="Create the --path folder if it does not exist.")
@click.option("--names", type=click.Choice(KB_NAMES), default=None,
              help="How new entries' files are named: title ('Core plugins.md') or slug ('core-plugins.md'); "
                   "default: setting kb_names (title).")
@format_option
@click.pass_context
def kb_create(ctx: click.Context, name: str, path: str | None, make: bool, names: str | None, fmt: str) -> None:
    """Register a KB named NAME (letters, digits, '-', '_') and index any markdown already in it."""
    core = get_core(ctx)
    # A path typed on the command line is relative to where it was typed; the core takes absolute ones.
    folder = None if path is None else os.path.abspath(os.path.expanduser(path))
    created = core.kbs.create_kb(name, folder, create=make, names=names)
    report = core.kbs.build(name)
    created.entries = report.added
    if fmt == "json":
        emit_json(created.to_dict() | {"index": report.to_dict()})
        return
    click.echo(f"Created KB {created.name} at {created.path}")
    if report.added:
        click.echo(f"Indexed {plural(report.added, 'existing entry', 'existing entries')}; run `pyrite index embed --kb {name}` to embed them.")
    for problem in report.errors + report.warnings:
        click.echo(f"warning: {problem}", err=True)


@kb.command("list")
@format_option
@click.pass_context
def kb_list(ctx: click.Context, fmt: str) -> None:
    """List KBs with their folders and entry counts."""
    kbs = get_core(ctx).kbs.list_kbs()
    if fmt == "json":
        emit_json({"kbs": [k.to_dict() for k in kbs]})
        return
    if not kbs:
        click.echo("No KBs yet: pyrite kb create NAME")
    for k in kbs:
        click.echo(f"{k.name}\t{plural(k.entries, 'entry')}\t{k.path}\t{k.names} names")


@kb.command("remove")
@click.argument("name")
@format_option
@click.pass_context
def kb_remove(ctx: click.Context, name: str, fmt: str) -> None:
    """Remove a KB from the index; its folder and files are never deleted."""
    removed = get_core(ctx).kbs.remove_kb(name)
    if fmt == "json":
        emit_json({"removed": removed.to_dict()})
        return
    click.echo(f"Removed KB {removed.name} from the index; its files stay in {removed.path}")
