"""Secrets (API keys, tokens): the one check a secret setting passes and the one redaction every error passes."""

from __future__ import annotations

import re
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# Credentials in any shape a message may quote them: an auth header, a query string, a JSON field.
_TOKEN = r"[\w.~+/=-]{8,}"  # a credential-like value: 8 or more token characters
_CREDENTIAL = re.compile(
    r"(?i)((?:x-goog-api-key|x-api-key|api-key|authorization)[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)" + _TOKEN
    + r"|(\b(?:bearer|basic)\s+)" + _TOKEN
    + r"|((?:[?&;\s\"']|^)(?:key|api[_-]?key|access[_-]?token|token)=)" + _TOKEN)
_SHORTEST_SECRET = 4  # shorter values would mask ordinary words; no real key is this short


def check_secret(value: Any) -> str | None:
    """A secret setting's value with surrounding whitespace trimmed (None if empty).

    ValueError for inner whitespace, control or non-ASCII characters (no HTTP header can carry them);
    the message never quotes the value.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    for position, char in enumerate(text, 1):
        if char.isspace():
            raise ValueError(f"contains whitespace at character {position} of {len(text)} (value not shown)")
        if not char.isascii():
            raise ValueError(f"contains a non-ASCII character at character {position} of {len(text)} "
                             "(value not shown)")
        if not char.isprintable():
            raise ValueError(f"contains a control character at character {position} of {len(text)} "
                             "(value not shown)")
    return text


def variants(secret: str) -> set[str]:
    """The forms a secret takes in messages: as is, trimmed, percent-encoded and escaped (repr, bytes)."""
    out: set[str] = set()
    for form in {secret, secret.strip()}:
        out.update({form, quote(form, safe=""), quote_plus(form), repr(form)[1:-1], ascii(form)[1:-1],
                    repr(form.encode("utf-8", "backslashreplace"))[2:-1],
                    form.encode("unicode_escape").decode("ascii")})
        # The longest run of printable ASCII: whatever escaping does to the rest, this part stays verbatim.
        out.update(re.findall(r"[!-~]{8,}", form))
    return {v for v in out if len(v) >= _SHORTEST_SECRET}


def redact(message: str, secrets: Iterable[str | None] = ()) -> str:
    """message with every form of every secret, and any credential it quotes (Bearer, key=...), masked."""
    forms = {v for s in secrets if s for v in variants(s)}
    for form in sorted(forms, key=len, reverse=True):  # longest first: a shorter form may sit inside it
        message = message.replace(form, MASK)
    return _CREDENTIAL.sub(_mask_credential, message)


def _mask_credential(match: re.Match[str]) -> str:
    prefix = next(g for g in match.groups() if g is not None)
    return prefix + MASK
