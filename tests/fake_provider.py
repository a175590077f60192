"""A small OpenAI- and Gemini-shaped embedding server on 127.0.0.1 that injects faults on request.

    with FakeProvider(dimension=32) as fake:
        fake.url          # OpenAI-compatible base URL: POST {url}/embeddings
        fake.gemini_url   # Gemini base URL: POST {gemini_url}/models/{model}:batchEmbedContents

Vectors are deterministic (seeded by a hash of the input text, so `fake.vector(text)`
predicts them). Every switch is a plain attribute, settable from a test at any time:

    delay                  seconds from a request's arrival to its answer (whatever its size)
    fail_nth               {n: (status, {header: value}, message)} for the n-th request (1-based)
    fail_every             (k, status, {header: value}, message): every k-th request
    fail_all               (status, message): every request
    reset_nth / reset_all  close the connection with a TCP reset instead of answering
    hang_nth / hang_all    sleep `hang_seconds` before answering (past a client timeout)
    bad_marker             400 when an input contains it; the message names that input
    nan_marker             a NaN vector for inputs that contain it
    required_key           401 (auth_status) unless the bearer / x-goog-api-key equals it
    forbid_all             403 on every request
    auth_status            status when the key is wrong (401 or 403)
    echo_key               error messages quote the key the client sent (to test redaction)
    echo_auth_answer       answer 200 with the auth header sent as each `embedding` (a broken proxy)
    message_padding        text put in front of every error message (long messages get cut)
    models                 known model names; others get `model_status` with `model_message`
    drop_one               answer one vector fewer than inputs
    answer_dimension       answer vectors of this size whatever was asked
    honour_dimensions      use the request's dimensions / outputDimensionality (default True)
    nan_all / inf_all      every vector holds a NaN / an infinity
    max_inputs             400 if a request has more inputs
    max_input_chars        400 if one input is longer (a model's input limit)
    max_request_chars      400 if the inputs of one request are longer together (a token budget)

`requests` logs every request (number, api, path, query, headers, inputs, status,
start and end times); `in_flight_max` is the most requests answered at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

_GEMINI_PATH = re.compile(r"^/v1beta/models/([^/:]+):batchEmbedContents$")
_OPENAI_PATH = "/v1/embeddings"


@dataclass
class LoggedRequest:
    n: int
    api: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    inputs: list[str]
    started: float
    status: int = 0
    ended: float = 0.0
    model: str | None = None
    dimensions: int | None = None


@dataclass
class FakeProvider:
    dimension: int = 32
    delay: float = 0.0
    fail_nth: dict[int, tuple[int, dict[str, str], str]] = field(default_factory=dict)
    fail_every: tuple[int, int, dict[str, str], str] | None = None
    fail_all: tuple[int, str] | None = None
    reset_nth: set[int] = field(default_factory=set)
    reset_all: bool = False
    hang_nth: set[int] = field(default_factory=set)
    hang_all: bool = False
    hang_seconds: float = 2.0
    bad_marker: str | None = None
    nan_marker: str | None = None
    required_key: str | None = None
    forbid_all: bool = False
    auth_status: int = 401
    echo_key: bool = False
    echo_auth_answer: bool = False
    message_padding: str = ""
    models: set[str] | None = None
    model_status: int = 404
    model_message: str = "The model `{model}` does not exist or you do not have access to it."
    drop_one: bool = False
    answer_dimension: int | None = None
    honour_dimensions: bool = True
    nan_all: bool = False
    inf_all: bool = False
    max_inputs: int | None = None
    max_input_chars: int | None = None
    max_request_chars: int | None = None

    def __post_init__(self) -> None:
        self.requests: list[LoggedRequest] = []
        self.in_flight = 0
        self.in_flight_max = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "FakeProvider":
        fake = self

        class Handler(_Handler):
            provider = fake

        server = _Server(("127.0.0.1", 0), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-provider", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeProvider":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """OpenAI-compatible base URL."""
        return f"{self.base}/v1"

    @property
    def gemini_url(self) -> str:
        return f"{self.base}/v1beta"

    def reset(self) -> None:
        """Forget the request log (switches stay as they are)."""
        with self._lock:
            self.requests.clear()
            self.in_flight_max = self.in_flight

    # -- what tests assert on -------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.requests)

    def sizes(self, status: int | None = 200) -> list[int]:
        """Inputs per request (only requests answered with `status`; None for all)."""
        return [len(r.inputs) for r in self.requests if status is None or r.status == status]

    def statuses(self) -> list[int]:
        return [r.status for r in self.requests]

    def vector(self, text: str, dimension: int | None = None) -> np.ndarray:
        """The (unnormalized) vector this server answers for text."""
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(dimension or self.dimension)

    # -- the server side --------------------------------------------------------------------

    def _answer(self, handler: "_Handler") -> None:
        started = time.time()
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with self._lock:
            n = len(self.requests) + 1
            req = LoggedRequest(n=n, api="?", path=parts.path, query=parts.query, headers=headers, body=body,
                                inputs=[], started=started)
            self.requests.append(req)
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            self._respond(handler, req)
        finally:
            with self._lock:
                self.in_flight -= 1
            req.ended = time.time()

    def _respond(self, handler: "_Handler", req: LoggedRequest) -> None:
        n = req.n
        # Read the request in the shape of its API.
        gemini = _GEMINI_PATH.match(req.path)
        body = req.body if isinstance(req.body, dict) else {}
        if req.path == _OPENAI_PATH:
            req.api = "openai"
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            req.inputs = [str(t) for t in inputs or []]
            req.model = body.get("model")
            req.dimensions = body.get("dimensions")
            sent_key = (req.headers.get("authorization") or "").removeprefix("Bearer ")
        elif gemini:
            req.api = "gemini"
            req.model = unquote(gemini.group(1))
            items = body.get("requests") or []
            req.inputs = ["".join(p.get("text", "") for p in (i.get("content") or {}).get("parts", []))
                          for i in items]
            dims = {i.get("outputDimensionality") for i in items}
            req.dimensions = dims.pop() if len(dims) == 1 else None
            sent_key = req.headers.get("x-goog-api-key") or ""
        else:
            return self._error(handler, req, 404, f"no route {req.path}")

        if self.reset_all or n in self.reset_nth:
            return self._reset(handler, req)
        if self.hang_all or n in self.hang_nth:
            time.sleep(self.hang_seconds)
        quoted = f" (key sent: {sent_key})" if self.echo_key else ""
        if self.required_key is not None and sent_key != self.required_key:
            return self._error(handler, req, self.auth_status, f"Incorrect API key provided{quoted}.")
        if self.forbid_all:
            return self._error(handler, req, 403, f"Permission denied for this project{quoted}.")
        if self.models is not None and req.model not in self.models:
            return self._error(handler, req, self.model_status,
                               self.model_message.format(model=req.model) + quoted)
        if n in self.fail_nth:
            status, extra, message = self.fail_nth[n]
            return self._error(handler, req, status, message + quoted, extra)
        if self.fail_every is not None and n % self.fail_every[0] == 0:
            _, status, extra, message = self.fail_every
            return self._error(handler, req, status, message + quoted, extra)
        if self.fail_all is not None:
            status, message = self.fail_all
            return self._error(handler, req, status, message + quoted)
        if self.max_inputs is not None and len(req.inputs) > self.max_inputs:
            return self._error(handler, req, 400, f"too many inputs: {len(req.inputs)} > {self.max_inputs}")
        if self.max_request_chars is not None and sum(map(len, req.inputs)) > self.max_request_chars:
            return self._error(handler, req, 400, f"request too large: {sum(map(len, req.inputs))} characters")
        for i, text in enumerate(req.inputs):
            if self.max_input_chars is not None and len(text) > self.max_input_chars:
                return self._error(handler, req, 400, f"input {i} is too long: {len(text)} characters")
            if self.bad_marker and self.bad_marker in text:
                return self._error(handler, req, 400,
                                   f"input {i} rejected ({self.bad_marker}): {text[:40]!r}{quoted}")

        if self.echo_auth_answer:
            sent = req.headers.get("authorization") or req.headers.get("x-goog-api-key") or ""
            answer = ({"data": [{"index": i, "embedding": sent} for i in range(len(req.inputs))]} if req.api == "openai"
                      else {"embeddings": [{"values": sent} for _ in req.inputs]})
            return self._send(handler, req, 200, answer)
        dim = self.answer_dimension or (req.dimensions if self.honour_dimensions and req.dimensions else None) \
            or self.dimension
        vectors = []
        for text in req.inputs:
            vec = [float(x) for x in self.vector(text, dim)]
            if self.nan_all or (self.nan_marker and self.nan_marker in text):
                vec[len(vec) // 2] = math.nan
            if self.inf_all:
                vec[0] = math.inf
            vectors.append(vec)
        if self.drop_one and vectors:
            vectors = vectors[:-1]
        if req.api == "openai":
            answer: Any = {"object": "list", "model": req.model,
                           "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                           "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        else:
            answer = {"embeddings": [{"values": v} for v in vectors]}
        self._send(handler, req, 200, answer)

    def _error(self, handler: "_Handler", req: LoggedRequest, status: int, message: str,
               extra: dict[str, str] | None = None) -> None:
        message = self.message_padding + message
        if req.api == "gemini":
            payload = {"error": {"code": status, "message": message, "status": "ERROR"}}
        else:
            payload = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        self._send(handler, req, status, payload, extra)

    def _send(self, handler: "_Handler", req: LoggedRequest, status: int, payload: Any,
              extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")  # NaN and Infinity go out as JSON5-ish tokens, as some servers do
        self._wait(req)
        req.status = status
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            for key, value in (extra or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:  # the client gave up (timeout)
            handler.close_connection = True

    def _wait(self, req: LoggedRequest) -> None:
        """Answer `delay` seconds after the request came in, however long building the answer took."""
        remaining = req.started + self.delay - time.time()
        if remaining > 0:
            time.sleep(remaining)

    def _reset(self, handler: "_Handler", req: LoggedRequest) -> None:
        self._wait(req)
        req.status = -1
        sock = handler.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a close with linger 0 sends RST
        except OSError:
            pass
        handler.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # resets and timeouts are on purpose
        pass


class _Handler(BaseHTTPRequestHandler):
    provider: FakeProvider
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stalls
    timeout = 30

    def do_POST(self) -> None:  # noqa: N802
        self.provider._answer(self)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """A started FakeProvider (32-d vectors, no faults), stopped after the test."""
    fake = FakeProvider()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
