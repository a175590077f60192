"""Schema-driven fuzzing of the REST API: no input may produce a 5xx, and every 4xx is {"error": ...}.

Schemathesis reads /api/openapi.json from the app (in-process, lifespan running, hash embedder) and
generates valid and invalid requests for every operation; a second, hand-made Hypothesis pass throws
random JSON of any type and random path segments (percent-encoded separators included) at each route.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from starlette.testclient import TestClient

from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.server.app import create_app
from pyrite.server.openapi import openapi_document

MAX_EXAMPLES = 40


def check_response(status: int, content_type: str, text: str, what: Any) -> None:
    assert status < 500, f"{status} for {what}: {text[:300]}"
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, what)
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (body, what)
        assert "Traceback" not in body["error"]


def _make_app() -> Any:
    """The app on a home of its own: built at import (schemathesis needs the schema then), so it cannot
    use the per-test home; the hash embedder and no token are set explicitly, whatever the environment.

    (schemathesis.pytest.from_fixture would defer this to a fixture, but with pytest 9 it fails on
    `request.node._nodeid`.)"""
    home = Path(tempfile.mkdtemp(prefix="pyrite-fuzz-"))
    # schemathesis calls an ASGI app as Host "testserver": a configured host, as a user would add one.
    settings = dataclasses.replace(load_settings(home, embed_provider="hash"), api_token=None, allowed_hosts=("testserver",),
                                   embed_model=None, embed_dimensions=None)
    core = Pyrite(settings)
    try:
        core.kbs.create_kb("notes")
        core.kbs.create_entry("notes", "Seed entry", "something to find", tags=["seed"])
    finally:
        core.close()
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return create_app(settings, worker=True)


APP = _make_app()
schema = schemathesis.openapi.from_asgi("/api/openapi.json", APP)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=MAX_EXAMPLES, deterministic=True)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_no_server_errors(case: Any) -> None:
    response = case.call()
    content_type = response.headers.get("content-type") or [""]
    if isinstance(content_type, list):
        content_type = content_type[0]
    check_response(response.status_code, content_type, response.text,
                   (case.method, case.formatted_path, case.query, case.body))


# -- hand-made strategies from the OpenAPI document --------------------------------------------------------

DOC = openapi_document()
OPERATIONS = {f"{method.upper()} {path}": op for path, ops in DOC["paths"].items() for method, op in ops.items()}
BODY_OPERATIONS = sorted(k for k, op in OPERATIONS.items() if "requestBody" in op)
QUERY_OPERATIONS = sorted(k for k in OPERATIONS if k.startswith("GET ") and "{" not in k)
PATH_OPERATIONS = sorted(k for k in OPERATIONS if "{" in k)


def draw_operation(data: Any, names: list[str]) -> tuple[str, str, dict[str, Any]]:
    name = data.draw(st.sampled_from(names), label="operation")
    method, path = name.split(" ", 1)
    return method, path, OPERATIONS[name]


def _schema_of(op: dict[str, Any]) -> dict[str, Any]:
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return DOC["components"]["schemas"][ref.rsplit("/", 1)[1]]


scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62, max_value=2**80)
           | st.integers(max_value=-(2**62)) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=40) | st.sampled_from(["notes", "seed-entry", "failed", "done", "skipped", "", "..",
                                                     "a/b", "\x00", "../../etc/passwd", "hybrid"]))
PLACEHOLDER = "__fuzz_token__"
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


@st.composite
def bodies(draw: Any, schema: dict[str, Any]) -> bytes:
    """Raw request bodies: objects built on the schema's fields with values of any type, any JSON value,
    JSON with tokens Python accepts but JSON does not, or arbitrary bytes."""
    kind = draw(st.sampled_from(["object", "object", "object", "any", "raw", "tokens"]))
    if kind == "any":
        return json.dumps(draw(json_values)).encode()
    if kind == "raw":
        return draw(st.binary(max_size=64))
    fields = list(schema.get("properties", {}))
    keys = draw(st.lists(st.sampled_from(fields) | st.text(max_size=6), max_size=len(fields) + 1, unique=True))
    obj = {k: draw(json_values) for k in keys}
    if draw(st.booleans()):  # often valid where it matters, so requests get past the first checks
        obj.update({"kb": "notes", "title": "Fuzzed title", "name": "fuzzkb"})
        obj = {k: v for k, v in obj.items() if k in fields or k in keys}
    if kind == "tokens":
        # Put a token that Python's json accepts but JSON forbids (or no UTF-8 file can hold) somewhere:
        # a top-level field, inside meta, or inside tags.
        where = draw(st.sampled_from(fields + ["meta", "tags"]))
        if where == "meta":
            obj["meta"] = {draw(st.sampled_from(["k", PLACEHOLDER])): PLACEHOLDER}
        elif where == "tags":
            obj["tags"] = ["ok", PLACEHOLDER]
        else:
            obj[where] = PLACEHOLDER
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", '"\\ud800"', '"a\\udfffb"',
                                      "9" * 30, '"\\u0000"', '"ok"']))
        return json.dumps(obj).replace(json.dumps(PLACEHOLDER), token).encode()
    return json.dumps(obj).encode()


segment_pieces = st.sampled_from(["..", ".", "%2e%2e", "%2E%2E", "%2F", "%2f", "%5C", "%00", "%25", "%", "%ff",
                                  "a", "notes", "seed-entry", "%20", "~", "é", "%C3%A9", "%E2%80%AE", "//"])
segments = (st.lists(segment_pieces, min_size=1, max_size=4).map("".join)
            | st.text(min_size=1, max_size=20).map(lambda t: quote(t, safe="")))


@pytest.fixture
def fuzz_client(pyrite_home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(load_settings(), worker=True), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        assert c.post("/api/kbs", json={"name": "notes"}).status_code == 201
        assert c.post("/api/entries", json={"kb": "notes", "title": "Seed entry", "body": "text"}).status_code == 201
        yield c


def _check(r: Any, what: Any) -> None:
    check_response(r.status_code, r.headers.get("content-type", ""), r.text, what)


@given(data=st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: keep a failure quick
def test_random_bodies_never_5xx(fuzz_client: TestClient, data: Any) -> None:
    method, path, op = draw_operation(data, BODY_OPERATIONS)
    url = path.replace("{kb}", "notes").replace("{entry_id}", "seed-entry")
    body = data.draw(bodies(_schema_of(op)), label="body")
    r = fuzz_client.request(method, url, content=body, headers={"content-type": "application/json"})
    _check(r, (method, url, body[:300]))


@given(data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_query_strings_never_5xx(fuzz_client: TestClient, data: Any) -> None:
    method, path, op = draw_operation(data, QUERY_OPERATIONS)
    names = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
    keys = data.draw(st.lists(st.sampled_from(names) | st.text(min_size=1, max_size=5), max_size=5)
                     if names else st.lists(st.text(min_size=1, max_size=5), max_size=2), label="keys")
    values = st.text(max_size=30) | st.integers().map(str) | st.sampled_from(
        ["0", "-1", "1e3", "nan", "inf", "1" * 40, "notes", "keyword", "semantic", "hybrid", "0.0001", "300.1",
         "%00", "\x00", " ", "true"])
    query = "&".join(f"{quote(k, safe='')}={quote(data.draw(values, label=k), safe='')}" for k in keys)
    url = f"{path}?{query}" if query else path
    r = fuzz_client.request(method, url)
    _check(r, (method, url))


@given(data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_path_segments_never_5xx(fuzz_client: TestClient, data: Any, pyrite_home: Path) -> None:
    method, path, op = draw_operation(data, PATH_OPERATIONS)
    kb = data.draw(st.sampled_from(["notes"]) | segments, label="kb")
    entry_id = data.draw(segments, label="entry_id")
    url = path.replace("{kb}", kb).replace("{entry_id}", entry_id)
    body = {"body": "fuzzed"} if method == "PATCH" else None
    r = fuzz_client.request(method, url, json=body)
    _check(r, (method, url))
    assert r.status_code != 200 or entry_id == "seed-entry" or method == "GET", (method, url, r.text[:200])
    # Whatever the path, nothing is written outside the KB folder.
    assert sorted(p.name for p in pyrite_home.iterdir() if not p.name.startswith("index.db")) == ["kbs"]
