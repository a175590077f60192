"""`pyrite create|get|update|delete|list-entries`: one entry at a time."""

from __future__ import annotations

from typing import Any

import click

from pyrite.cli.common import emit_json, entry_command, format_option, get_core, kb_option, parse_meta, read_body, warn
from pyrite.cli.links import print_links
from pyrite.models import Entry

no_embed_option = click.option("--no-embed", is_flag=True,
                               help="Only queue the embedding; never embed in this process.")


def body_options(fn: Any) -> Any:
    fn = click.argument("stdin", required=False, metavar="[-]")(fn)
    fn = click.option("--body-file", default=None, help="Read the body from this file ('-' for stdin).")(fn)
    return click.option("--body", default=None, help="The body text (markdown).")(fn)


def _show(entry: Entry, fmt: str, core: Any, brief: str | None = None,
          links: dict[str, list[dict[str, Any]]] | None = None) -> None:
    if fmt == "json":
        emit_json(entry.to_dict())
    elif brief is not None:
        click.echo(brief)
    else:
        click.echo(f"{entry.kb}/{entry.id}  {entry.title}")
        click.echo(f"  type: {entry.type}  tags: {', '.join(entry.tags) or '-'}  updated: {entry.updated}")
        click.echo(f"  file: {entry.path}  embedding: {entry.embedding_status or 'off'}")
        if links is not None:
            print_links(links)
        if entry.body:
            click.echo("")
            click.echo(entry.body)
    if entry.embedding_status == "failed" or (entry.embedding_status == "pending" and entry.embedding_error):
        warn(f"warning: embedding failed: {entry.embedding_error}")
    elif not core.provider.enabled and core.settings.embed_provider != "none":
        warn(f"note: {core.provider.why_disabled()}")


@click.command()
@kb_option
@click.option("--title", required=True, help="Title; the file is named after it (or its slug, see kb create --names).")
@click.option("--folder", default="", help="Folder inside the KB for the new file (made if missing), e.g. 'Projects/2024'.")
@body_options
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for several).")
@click.option("--type", "kind", default="note", show_default=True, help="Entry type.")
@click.option("--meta", multiple=True, help="Extra frontmatter key=value (repeatable).")
@no_embed_option
@format_option
@click.pass_context
def create(ctx: click.Context, kb: str, title: str, folder: str, body: str | None, body_file: str | None,
           stdin: str | None, tags: tuple[str, ...], kind: str, meta: tuple[str, ...], no_embed: bool, fmt: str) -> None:
    """Create an entry: a markdown file in the KB, indexed and embedded before this returns."""
    text = read_body(body, body_file, stdin) or ""
    core = get_core(ctx)
    entry = core.kbs.create_entry(kb, title, text, tags=tags, type=kind, meta=parse_meta(meta), embed=not no_embed,
                                  folder=folder)
    _show(entry, fmt, core, brief=f"Created {entry.kb}/{entry.id} ({entry.path}), embedding: "
                                  f"{entry.embedding_status or 'off'}")


@entry_command
def get(ctx: click.Context, entry_id: str, kb: str, fmt: str) -> None:
    """Show one entry."""
    core = get_core(ctx)
    entry, info = core.kbs.get_entry(kb, entry_id), core.kbs.entry_links(kb, entry_id)
    if fmt == "json":
        emit_json({**entry.to_dict(), "links": info})
        return
    _show(entry, fmt, core, links=info)


@click.command()
@click.argument("entry_id", metavar="ID")
@kb_option
@click.option("--title", default=None, help="New title (the id stays).")
@body_options
@click.option("--tag", "tags", multiple=True, help="Replace the tags with these (repeatable).")
@click.option("--type", "kind", default=None, help="New type.")
@click.option("--meta", multiple=True, help="Set extra frontmatter key=value (repeatable).")
@no_embed_option
@format_option
@click.pass_context
def update(ctx: click.Context, entry_id: str, kb: str, title: str | None, body: str | None, body_file: str | None,
           stdin: str | None, tags: tuple[str, ...], kind: str | None, meta: tuple[str, ...], no_embed: bool,
           fmt: str) -> None:
    """Update an entry; other frontmatter keys are kept as they are."""
    core = get_core(ctx)
    entry = core.kbs.update_entry(kb, entry_id, title=title, body=read_body(body, body_file, stdin),
                                  tags=list(tags) if tags else None, type=kind, meta=parse_meta(meta),
                                  embed=not no_embed)
    _show(entry, fmt, core, brief=f"Updated {entry.kb}/{entry.id}, embedding: {entry.embedding_status or 'off'}")


@entry_command
def delete(ctx: click.Context, entry_id: str, kb: str, fmt: str) -> None:
    """Delete an entry: its file, index row and vectors."""
    get_core(ctx).kbs.delete_entry(kb, entry_id)
    if fmt == "json":
        emit_json({"deleted": {"kb": kb, "id": entry_id}})
    else:
        click.echo(f"Deleted {kb}/{entry_id}")


@click.command("list-entries")
@kb_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@format_option
@click.pass_context
def list_entries(ctx: click.Context, kb: str, limit: int | None, fmt: str) -> None:
    """List a KB's entries, most recently updated first."""
    items = get_core(ctx).kbs.list_entries(kb, limit=limit)
    if fmt == "json":
        emit_json({"entries": [e.to_dict(with_body=False) for e in items]})
        return
    for e in items:
        click.echo(f"{e.id}\t{e.title}\t{e.updated}\t{e.embedding_status or '-'}")


COMMANDS = [create, get, update, delete, list_entries]
