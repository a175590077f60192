"""`pyrite search`."""

from __future__ import annotations

import click

from pyrite.cli.common import emit_json, format_option, get_core, warn
from pyrite.field_rules import SEARCH_LIMIT_MAX, SEARCH_MODES


@click.command()
@click.argument("query")
@click.option("--kb", default=None, help="Search only this KB.")
@click.option("--mode", type=click.Choice(SEARCH_MODES), default=None,
              help="keyword, semantic or hybrid (default: hybrid when vectors exist, else keyword).")
@click.option("--limit", type=click.IntRange(1, SEARCH_LIMIT_MAX), default=10, show_default=True, help="Most results.")
@click.option("--wait", type=click.FloatRange(0, 300), default=None,
              help="First wait up to this many seconds for pending embeddings (read-your-writes).")
@format_option
@click.pass_context
def search(ctx: click.Context, query: str, kb: str | None, mode: str | None, limit: int, wait: float | None,
           fmt: str) -> None:
    """Search entries by words (keyword), by meaning (semantic) or both (hybrid)."""
    answer = get_core(ctx).search.search(query, kb=kb, mode=mode, limit=limit, wait=wait)
    if fmt == "json":
        emit_json(answer)
        return
    for note in answer["notes"]:
        warn(f"note: {note}")
    if not answer["results"]:
        click.echo("No results.")
    for r in answer["results"]:
        status = f"  [{r['embedding_status']}]" if r.get("embedding_status") else ""
        click.echo(f"{r['score']:>9.4f}  {r['kb']}/{r['id']}  {r['title']}{status}")
        if r["snippet"]:
            click.echo(f"           {r['snippet']}")
