"""What every CLI module shares: error translation, the core object, settings flags, output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from pyrite.config import SETTINGS, Settings, load_settings
from pyrite.errors import PyriteError

F = TypeVar("F", bound=Callable[..., Any])
# Settings exposed as global flags; secrets stay out of argv (visible in `ps`).
FLAG_SETTINGS = [s for s in SETTINGS if not s.secret]


class PyriteGroup(click.Group):
    """A click group that turns PyriteError into a message on stderr and exit code 1, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PyriteError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


def settings_options(fn: F) -> F:
    """Add one --flag per setting (from config.SETTINGS), all defaulting to None (= not given)."""
    for setting in reversed(FLAG_SETTINGS):
        flag = "--" + setting.key.replace("_", "-")
        fn = click.option(flag, setting.key, default=None, help=f"{setting.help} [env {setting.env}]",
                          show_default=False)(fn)
    return fn


def settings_loader(ctx: click.Context) -> Callable[[], Settings]:
    """A callable that resolves this invocation's settings afresh: flag > env > config.yaml > default."""
    obj = ctx.find_root().obj
    home = Path(obj["home"]) if obj.get("home") else None
    flags = obj["flags"]
    return lambda: load_settings(home, **flags)


def get_settings(ctx: click.Context) -> Settings:
    """The process's settings, resolved once."""
    obj = ctx.find_root().obj
    if "settings" not in obj:
        obj["settings"] = settings_loader(ctx)()
    return obj["settings"]


def get_core(ctx: click.Context) -> Any:
    """The Pyrite core for this invocation, opened on first use and closed when the command ends."""
    root = ctx.find_root()
    if "core" not in root.obj:
        from pyrite.core import Pyrite  # kept out of `pyrite --help`: opening it touches the database

        core = Pyrite(get_settings(ctx), reload=settings_loader(ctx))
        root.obj["core"] = core
        root.call_on_close(core.close)
    return root.obj["core"]


kb_option = click.option("--kb", required=True, help="Name of the KB.")


def entry_command(fn: F) -> click.Command:
    """A command on one entry: fn(ctx, entry_id, kb, fmt), with the ID argument, --kb and --format."""
    return click.command()(click.argument("entry_id", metavar="ID")(kb_option(format_option(click.pass_context(fn)))))


def format_option(fn: F) -> F:
    """The --format text|json option every data-printing command takes."""
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="Output format.")(fn)


def emit_json(data: Any, *, line: bool = False) -> None:
    """Print data as JSON on stdout; line: on one line (a stream of them is JSON Lines)."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=None if line else 2, default=str))


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 entry', '2 entries': count and the word in the right number (many: the plural, if not word+'s')."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {many or (word[:-1] + 'ies' if word.endswith('y') else word + 's')}"


def warn(message: str) -> None:
    """A note for the user on stderr."""
    click.echo(message, err=True)


def read_body(body: str | None, body_file: str | None, stdin_dash: str | None) -> str | None:
    """The entry body from --body, --body-file (F or -) or a lone '-' (stdin); None if none was given."""
    given = [x for x in (body, body_file, stdin_dash) if x is not None]
    if len(given) > 1:
        raise click.UsageError("give the body once: --body, --body-file or '-' (stdin)")
    if stdin_dash is not None and stdin_dash != "-":
        raise click.UsageError(f"unexpected argument {stdin_dash!r} (use '-' to read the body from stdin)")
    if body is not None:
        return body
    source = body_file if body_file is not None else stdin_dash
    if source is None:
        return None
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror}", param_hint="--body-file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter(f"{source} is not UTF-8 text", param_hint="--body-file") from None


def parse_meta(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """--meta key=value pairs as a dict (values stay strings); None if none were given."""
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--meta")
        out[key.strip()] = value
    return out
