"""What remote embedding APIs share: one httpx client per process, error classification, limits, redaction."""

from __future__ import annotations

import email.utils
import re
import threading
import time
from abc import abstractmethod
from typing import Any, Callable

import httpx
import numpy as np

from pyrite.embedders.base import Embedder, normalize
from pyrite.errors import EmbeddingError
from pyrite.secrets import redact

RETRY_AFTER_MAX_S = 300.0
RETRY_AFTER_DEFAULT_S = 5.0
_CLIENTS: dict[tuple[str, float], httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()
_MODEL_PROBLEM = re.compile(r"model.{0,80}(not found|does not exist|not exist|unknown|invalid|unsupported|no such)"
                            r"|(unknown|invalid|unsupported) model", re.I | re.S)


def shared_client(base_url: str, timeout: float) -> httpx.Client:
    """One pooled client per base URL and timeout for the whole process (connections are reused)."""
    key = (base_url, timeout)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = httpx.Client(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            )
            _CLIENTS[key] = client
        return client


def estimate_tokens(text: str) -> int:
    """A safe over-estimate of tokens: UTF-8 bytes / 3 (English runs ~4.5 bytes a token, CJK ~3)."""
    return len(text.encode("utf-8")) // 3 + 1


def split_by_budget(text: str, budget_tokens: int) -> list[str]:
    """Cut text at whitespace into pieces whose estimate_tokens fits the budget; hard-cut over-long words."""
    if estimate_tokens(text) <= budget_tokens:
        return [text]
    limit = max(4, budget_tokens * 3)
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for word in re.findall(r"\S+\s*", text):
        raw = word.encode("utf-8")
        while len(raw) > limit:  # one enormous "word" (base64, minified code): cut at a character boundary
            head = raw[:limit].decode("utf-8", "ignore")
            if current:
                pieces.append("".join(current))
                current, size = [], 0
            pieces.append(head)
            raw = raw[len(head.encode("utf-8")):]
        word = raw.decode("utf-8")
        if current and size + len(raw) > limit:
            pieces.append("".join(current))
            current, size = [], 0
        if word:
            current.append(word)
            size += len(raw)
    if current:
        pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped; a default if absent."""
    if not value:
        return RETRY_AFTER_DEFAULT_S
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            return RETRY_AFTER_DEFAULT_S
        seconds = when - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return RETRY_AFTER_DEFAULT_S
    return min(RETRY_AFTER_MAX_S, max(0.0, seconds))


class RemoteEmbedder(Embedder):
    """Base of HTTP providers: subclasses build the request and read the vectors out of the answer."""

    default_url = ""
    max_input_tokens = 8191
    max_request_tokens = 250_000

    def __init__(self, model: str, *, url: str | None, api_key: str | None, dimensions: int | None,
                 timeout: float) -> None:
        self.model = model
        self.url = (url or self.default_url).rstrip("/")
        self.api_key = api_key
        self.requested_dimensions = dimensions
        self.dimension = dimensions
        self.timeout = timeout

    # -- what subclasses provide -----------------------------------------------------

    @abstractmethod
    def request(self, texts: list[str]) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(url, headers, JSON body) of one embedding request."""

    @abstractmethod
    def vectors(self, answer: Any, count: int) -> list[list[float]]:
        """The vectors in a successful answer, in input order."""

    # -- shared behaviour -----------------------------------------------------------------

    def chunk(self, text: str) -> list[str]:
        return split_by_budget(text, int(self.max_input_tokens * 0.9))

    def batches(self, texts: list[str]) -> list[list[str]]:
        """Split texts so no request exceeds max_batch inputs or the token budget."""
        out: list[list[str]] = []
        current: list[str] = []
        tokens = 0
        for text in texts:
            cost = estimate_tokens(text)
            if current and (len(current) >= self.max_batch or tokens + cost > self.max_request_tokens):
                out.append(current)
                current, tokens = [], 0
            current.append(text)
            tokens += cost
        if current:
            out.append(current)
        return out

    def redact(self, message: str, headers: dict[str, str] | None = None) -> str:
        """message with the API key (in any form) and the auth header values sent masked: the one redaction."""
        return redact(message, [self.api_key, *(headers or {}).values()])

    def embed(self, texts: list[str]) -> np.ndarray:
        parts = [self._post(batch) for batch in self.batches(texts)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _post(self, texts: list[str]) -> np.ndarray:
        """One request; every failure becomes an EmbeddingError whose message has passed redact."""
        url, headers, body = self.request(texts)
        try:
            return self._send(url, headers, body, len(texts))
        except EmbeddingError as exc:
            exc.args = (self.redact(str(exc), headers),)
            raise

    def _send(self, url: str, headers: dict[str, str], body: dict[str, Any], count: int) -> np.ndarray:
        where = f"{self.provider} {self.model}"
        bad = _bad_header(headers)
        if bad is not None:
            raise EmbeddingError(f"{where}: the {bad} header cannot carry the API key: it must be printable ASCII "
                                 "without spaces (check PYRITE_EMBED_API_KEY)", misconfigured=True, retryable=False)
        client = shared_client(self.url, self.timeout)
        try:
            response = client.post(url, headers=headers, json=body)
        except httpx.TimeoutException as exc:
            raise EmbeddingError(f"{where}: timed out after {self.timeout:g}s ({type(exc).__name__})") from None
        except (UnicodeError, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            # A request we cannot even send (a header or URL that HTTP cannot carry): retrying never helps.
            raise EmbeddingError(f"{where}: cannot send the request: {type(exc).__name__}: {exc} "
                                 "(check PYRITE_EMBED_API_KEY and PYRITE_EMBED_URL)",
                                 misconfigured=True, retryable=False) from None
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"{where}: connection failed: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise self._http_error(response, where, headers)
        try:
            answer = response.json()
            arr = np.asarray(self.vectors(answer, count), dtype=np.float64)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Redact before the cut: a cut must not leave a piece of a key the answer quoted.
            detail = self.redact(str(exc), headers)[:200]
            raise EmbeddingError(f"{where}: unreadable answer ({type(exc).__name__}: {detail})") from None
        # Count, dimension and finiteness are checked once, by provider.check_vectors, before storing.
        return normalize(arr) if arr.ndim == 2 else arr

    def _http_error(self, response: httpx.Response, where: str, headers: dict[str, str]) -> EmbeddingError:
        status = response.status_code
        detail = _error_text(response, lambda text: self.redact(text, headers))
        message = f"{where}: HTTP {status}: {detail}"
        if status == 429:
            return EmbeddingError(message, retry_after=parse_retry_after(response.headers.get("retry-after")))
        if status in (401, 403):
            return EmbeddingError(f"{message} (check PYRITE_EMBED_API_KEY)", misconfigured=True, retryable=False)
        if status == 404 or (status == 400 and _MODEL_PROBLEM.search(detail)):
            return EmbeddingError(f"{message} (check PYRITE_EMBED_MODEL and PYRITE_EMBED_URL)", misconfigured=True,
                                  retryable=False)
        if status in (400, 413, 422):
            return EmbeddingError(message, per_input=True, retryable=False)
        return EmbeddingError(message)


def _bad_header(headers: dict[str, str]) -> str | None:
    """The name of the first header whose value HTTP cannot carry (non-ASCII, control characters), or None."""
    for name, value in headers.items():
        if not value.isascii() or any(not c.isprintable() for c in value):
            return name
    return None


def _error_text(response: httpx.Response, redact: Callable[[str], str]) -> str:
    """The provider's own error message, redacted in full and then shortened (a cut must not split a key)."""
    try:
        data = response.json()
    except ValueError:
        text = response.text or response.reason_phrase
    else:
        err = data.get("error", data) if isinstance(data, dict) else data
        text = str(err.get("message") or err) if isinstance(err, dict) else str(err)
    return redact(text)[:300]
