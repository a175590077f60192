"""ASGI middleware: which hosts and web pages may call the server, bearer-token access, and the request body
size limit. (JSON-only bodies are checked where a route reads one: server/inputs.py.)"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable, Iterable

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _json(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


# Names only this machine answers to; a DNS-rebinding page reaches 127.0.0.1 under a name of its own.
LOOPBACK_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]")


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer an HTTP request with a JSON error, or close a WebSocket with code 4000+status and the reason."""
    if scope["type"] == "websocket":
        # Accept, then close with a code and reason: a close before the handshake reaches clients as a bare 403.
        message_in = await receive()
        if message_in["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4000 + status, "reason": _close_reason(message)})
        return
    await _json(send, status, message, headers)


def _close_reason(message: str) -> str:
    # A close frame's reason is at most 123 bytes of UTF-8.
    return message.encode("utf-8")[:123].decode("utf-8", "ignore")


class HostCheck:
    """Refuse requests whose Host is not a loopback name or a configured one (400), WebSocket included.

    Starlette's TrustedHostMiddleware decides; only its plain-text refusal is replaced by pyrite's JSON one.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = (*LOOPBACK_HOSTS, *allowed_hosts)
        self._trusted = TrustedHostMiddleware(self._passed, allowed_hosts=list(self.allowed), www_redirect=False)

    @staticmethod
    async def _passed(scope: Scope, receive: Receive, send: Send) -> None:
        scope["pyrite.host_ok"] = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self._trusted(scope, receive, _ignore)
        if scope.pop("pyrite.host_ok", False):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        await refuse(scope, receive, send, 400,
                     f"Host {host[:80]!r} is not allowed: use http://127.0.0.1, or add the name to "
                     "PYRITE_ALLOWED_HOSTS")


async def _ignore(message: Message) -> None:
    return None


class SameOrigin:
    """Refuse browser requests from other web pages (403): an `Origin` that is not the server's own or a
    configured one, or Fetch Metadata saying another site sent it. Clients that are not browsers send neither.

    Top-level navigations (a link the user followed) are let through: they cannot read the answer, and GET
    changes nothing.
    """

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {o.lower().rstrip("/") for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None:
            if origin.lower().rstrip("/") not in self.allowed | {self._own(scope, headers)}:
                await refuse(scope, receive, send, 403,
                             f"requests from web page {origin[:80]!r} are not allowed (add it to "
                             "PYRITE_ALLOWED_ORIGINS to allow it)")
                return
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site") and not (
                headers.get("sec-fetch-mode") == "navigate" and scope.get("method") in ("GET", "HEAD")):
            await refuse(scope, receive, send, 403, "requests from other web pages are not allowed")
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _own(scope: Scope, headers: Headers) -> str:
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        return f"{scheme}://{headers.get('host', '')}".lower()


class TokenAuth:
    """Require `Authorization: Bearer <token>` on every HTTP request and WebSocket when a token is set."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket") or self._ok(scope):
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, 401,
                     "missing or wrong bearer token (Authorization: Bearer <PYRITE_API_TOKEN>)",
                     [(b"www-authenticate", b"Bearer")])

    def _ok(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self.token)
        return False


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 to bodies over max_bytes, by Content-Length before reading, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _json(send, 400, "invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await _json(send, 413, f"request body over {self.max_bytes} bytes")
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _json(send, 413, f"request body over {self.max_bytes} bytes")
