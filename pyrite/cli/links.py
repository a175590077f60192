"""`pyrite links|backlinks|move` and `pyrite index check`: the link graph of a KB."""

from __future__ import annotations

from typing import Any

import click

from pyrite.cli.common import emit_json, entry_command, format_option, get_core, kb_option, warn


def link_line(link: dict[str, Any]) -> str:
    """One link as text: target as written (with fragment and alias) -> the id it resolves to."""
    written = link["target"] + (link["fragment"] or "") + (f" | {link['alias']}" if link.get("alias") else "")
    return f"{written} -> {link['id']}" if link.get("id") else f"{written} (unresolved)"


def print_links(info: dict[str, list[dict[str, Any]]]) -> None:
    """The outgoing, unresolved and backlinks of an entry, one a line."""
    for link in info["outgoing"] + info["unresolved"]:
        click.echo(f"  link: {link_line(link)}  (line {link['line']})")
    for link in info["backlinks"]:
        click.echo(f"  backlink: {link['source']}  (line {link['line']}: {link['target']}{link['fragment'] or ''})")


@entry_command
def links(ctx: click.Context, entry_id: str, kb: str, fmt: str) -> None:
    """Show the links an entry makes: the entries they resolve to, and those that resolve to none."""
    info = get_core(ctx).kbs.entry_links(kb, entry_id)
    if fmt == "json":
        emit_json({"outgoing": info["outgoing"], "unresolved": info["unresolved"]})
        return
    for link in info["outgoing"] + info["unresolved"]:
        click.echo(f"{link['line']}\t{link_line(link)}")


@entry_command
def backlinks(ctx: click.Context, entry_id: str, kb: str, fmt: str) -> None:
    """Show the entries that link to an entry."""
    info = get_core(ctx).kbs.entry_links(kb, entry_id)
    if fmt == "json":
        emit_json({"backlinks": info["backlinks"]})
        return
    for link in info["backlinks"]:
        click.echo(f"{link['source']}\t{link['line']}\t{link['target']}{link['fragment'] or ''}")


@click.command()
@click.argument("entry_id", metavar="ID")
@click.argument("new_id", metavar="NEW_ID")
@kb_option
@click.option("--no-embed", is_flag=True, help="Only queue re-embeddings of rewritten files; never embed here.")
@format_option
@click.pass_context
def move(ctx: click.Context, entry_id: str, new_id: str, kb: str, no_embed: bool, fmt: str) -> None:
    """Rename an entry (its file too) and rewrite the links to it in other files; its vectors stay."""
    result = get_core(ctx).kbs.move_entry(kb, entry_id, new_id, embed=not no_embed)
    for problem in result.skipped:
        warn(f"warning: links not rewritten in {problem}")
    if fmt == "json":
        emit_json(result.to_dict())
        return
    click.echo(f"Moved {kb}/{entry_id} to {kb}/{result.entry.id} ({result.entry.path}); "
               f"links rewritten in {len(result.rewritten)} file(s)")


@click.command()
@click.option("--kb", default=None, help="Only this KB (default: all).")
@format_option
@click.pass_context
def check(ctx: click.Context, kb: str | None, fmt: str) -> None:
    """List the links that resolve to no entry, per file (the links part of the index check)."""
    core = get_core(ctx)
    names = [core.kbs.get_kb(kb).name] if kb else [k.name for k in core.kbs.list_kbs()]
    found = {name: core.kbs.unresolved_links(name) for name in names}
    if fmt == "json":
        emit_json({"unresolved": found})
        return
    total = 0
    for name, items in found.items():
        for link in items:
            click.echo(f"{name}/{link['path']}:{link['line']}: unresolved link {link_line(link)[:-len(' (unresolved)')]}")
        total += len(items)
    click.echo(f"{total} unresolved link(s) in {len(names)} KB(s)", err=True)


COMMANDS = [links, backlinks, move]
