"""What a web page can do to `pyrite serve` on 127.0.0.1, tried by a real headless Chromium: nothing.

An attacker's page on another site (a real HTTP server on 127.0.0.1 that the browser knows as evil.test)
tries every request a page can send without the user's help, and a DNS-rebinding page (first answered by
the attacker, then resolving to 127.0.0.1) tries the API as its own origin. Controls show the same browser
and page logic do reach the server, so the refusals come from pyrite's Host and Origin rules.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.test_server_process import Server

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: run ./dev setup as root, or apt-get install chromium",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e '.[dev]'")

EVIL_HOST = "evil.test"  # the attacker's site; the browser resolves it to 127.0.0.1, where the test serves it
REBIND_HOST = "rebind.test"  # the rebinding attacker's name, resolving to 127.0.0.1 as after its DNS switch
STEP_MS = 5000  # every step of a page script ends within this

# The attacker's page logic. Each function settles within STEP_MS and reports what the page could see.
ATTACK_JS = """
const STEP_MS = %(step_ms)d;
const within = (p, fallback) =>
  Promise.race([p, new Promise(r => setTimeout(() => r(fallback), STEP_MS))]);

async function readText(url, init) {
  try {
    const r = await fetch(url, {...(init || {}), signal: AbortSignal.timeout(STEP_MS)});
    return {status: r.status, type: r.type, body: await r.text()};
  } catch (e) {
    return {error: String(e)};
  }
}

function submitForm(action, enctype, name, value) {
  // Into a hidden frame, so this page keeps running; the frame's load fires even for an error page.
  const frame = document.createElement('iframe');
  frame.name = 'f' + Math.random().toString(36).slice(2);
  document.body.appendChild(frame);
  const form = document.createElement('form');
  Object.assign(form, {method: 'post', action, enctype, target: frame.name});
  const input = Object.assign(document.createElement('input'), {type: 'hidden', name, value});
  form.appendChild(input);
  document.body.appendChild(form);
  const loaded = new Promise(r => { frame.onload = () => r('loaded'); });
  form.submit();
  return within(loaded, 'timeout');
}

function load(tag, url) {
  const el = document.createElement(tag);
  const done = new Promise(r => { el.onload = () => r('load'); el.onerror = () => r('error'); });
  el.src = url;
  document.body.appendChild(el);
  return within(done, 'timeout');
}

function socket(url) {
  return new Promise(resolve => {
    const messages = [];
    let ws;
    try { ws = new WebSocket(url); } catch (e) { resolve({error: String(e), messages}); return; }
    ws.onmessage = e => messages.push(String(e.data));
    ws.onclose = e => resolve({code: e.code, reason: e.reason, messages});
    setTimeout(() => { resolve({code: 'open after ' + STEP_MS + ' ms', messages}); ws.close(); }, STEP_MS);
  });
}

// A page on another site, aiming at the server at `target` (http://127.0.0.1:PORT).
async function crossSite(target, folder) {
  const plant = title => JSON.stringify({kb: 'notes', title});
  // A text/plain body needs no permission: the old server parsed it as JSON.
  const textPost = await readText(target + '/api/entries',
    {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: plant('planted by text')});
  // Forms post anywhere. A text/plain form sends name=value unescaped: a JSON object for a careless parser
  // (its last string gains the '='; no "create", which the old server did not know and did not need).
  const asField = obj => JSON.stringify(obj).slice(0, -2);  // + '="}' closes the last string and the object
  const formUrlencoded = await submitForm(target + '/api/kbs', 'application/x-www-form-urlencoded',
    asField({name: 'planted', create: true, path: folder}), '"}');
  const formText = await submitForm(target + '/api/kbs', 'text/plain', asField({name: 'planted2', path: folder}),
    '"}');
  // JSON needs a preflight, which the server must refuse.
  const jsonPost = await readText(target + '/api/entries',
    {method: 'POST', headers: {'Content-Type': 'application/json'}, body: plant('planted by json')});
  const read = await readText(target + '/api/entries?kb=notes');
  const img = await load('img', target + '/api/entries?kb=notes');
  const script = await load('script', target + '/api/kbs');
  const ws = await socket(target.replace(/^http/, 'ws') + '/ws?since=0');
  return {textPost, formUrlencoded, formText, jsonPost, read, img, script, ws};
}

// A page whose own origin is the server's address under the attacker's name: it uses relative URLs.
async function sameOrigin(folder, entryPath) {
  const json = {'Content-Type': 'application/json'};
  const kbs = await readText('/api/kbs');
  const entries = await readText('/api/entries?kb=notes');
  const post = await readText('/api/entries',
    {method: 'POST', headers: json, body: JSON.stringify({kb: 'notes', title: 'planted by rebinding'})});
  const kbPost = await readText('/api/kbs',
    {method: 'POST', headers: json, body: JSON.stringify({name: 'rebound', path: folder, create: true})});
  const del = await readText(entryPath, {method: 'DELETE'});
  const ws = await socket('ws://' + location.host + '/ws?since=0');
  return {kbs, entries, post, kbPost, del, ws};
}
""" % {"step_ms": STEP_MS}

PAGE = f"<!doctype html><html><head><title>totally harmless</title><script>{ATTACK_JS}</script></head>" \
       "<body><p>nothing to see</p></body></html>"


class _AttackerHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def attacker() -> Iterator[str]:
    """The attacker's web server on 127.0.0.1; yields its page's URL as the browser knows it (evil.test)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="attacker-site", daemon=True)
    thread.start()
    try:
        yield f"http://{EVIL_HOST}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system; the attackers' names resolve to 127.0.0.1, and no proxy is used."""
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), timeout=30_000, args=[
            "--no-proxy-server",
            f"--host-resolver-rules=MAP {EVIL_HOST} 127.0.0.1, MAP {REBIND_HOST} 127.0.0.1",
            # Chromium's own Local Network Access checks stop the rebinding page's requests in the browser
            # (they never reach pyrite); other browsers have none. Off, so that only the server decides.
            "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
            "PrivateNetworkAccessSendPreflights",
        ])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(STEP_MS * 4)
    try:
        yield context.new_page()
    finally:
        context.close()


def _start(root: Path, name: str, env: dict[str, str] | None = None) -> Server:
    """A hash-embedder `pyrite serve` with a KB 'notes' holding one entry; other PYRITE_ settings cleared."""
    # PYRITE_HOME stays out: Server sets it to the home under root.
    full = {k: "" for k in os.environ if k.startswith("PYRITE_") and k != "PYRITE_HOME"}
    full.update({"PYRITE_EMBED_PROVIDER": "hash", **(env or {})})
    srv = Server(root / f"{name}-home", root / f"{name}.log", env=full)
    try:
        srv.wait_healthy(30)
        assert httpx.post(f"{srv.url}/api/kbs", json={"name": "notes"}).status_code == 201
        r = httpx.post(f"{srv.url}/api/entries", json={"kb": "notes", "title": "Private plans",
                                                       "body": "the secret is in here"})
        assert r.status_code == 201, r.text
    except BaseException:
        srv.kill()
        raise
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(tmp_path_factory.mktemp("browser"), "serve")
    try:
        yield srv
        assert "Traceback" not in srv.log(), srv.log()[-3000:]
        assert srv.terminate() == 0, srv.log()[-2000:]
    finally:
        srv.kill()


def snapshot(server: Server) -> dict[str, Any]:
    """What the attacks must not change: the entries, the KBs and the files of the server's home."""
    entries = httpx.get(f"{server.url}/api/entries", params={"kb": "notes"}).json()["entries"]
    kbs = httpx.get(f"{server.url}/api/kbs").json()["kbs"]
    home = server.log_path.parent / server.log_path.name.replace(".log", "-home")
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*.md"))
    return {"entries": sorted((e["id"], e["title"]) for e in entries), "kbs": sorted(k["name"] for k in kbs),
            "files": files}


def log_mark(server: Server) -> int:
    """The size of the server's log once it stops growing (uvicorn logs a request just after answering it)."""
    size, deadline = -1, time.monotonic() + 3
    while len(server.log()) != size and time.monotonic() < deadline:
        size = len(server.log())
        time.sleep(0.2)
    return size


def access_log(server: Server, since: int, expect: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """(method, path, status) of each request uvicorn logged after byte `since` of the server's log, once
    each of `expect` is there (uvicorn logs just after answering) or after a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        found = re.findall(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})', server.log()[since:])
        seen = [(m, p, int(s)) for m, p, s in found]
        if all(e in seen for e in expect) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def test_cross_site_page_can_neither_write_nor_read(server: Server, page: Any, attacker: str,
                                                    tmp_path: Path) -> None:
    before = snapshot(server)
    mark = log_mark(server)
    folder = tmp_path / "planted" / "deep"
    page.goto(attacker)
    out = page.evaluate("([t, f]) => crossSite(t, f)", [server.url, str(folder)])
    # Each attempt reached pyrite and was refused there (not lost in the browser): the access log says so.
    refused = [("POST", "/api/entries", 403), ("POST", "/api/kbs", 403), ("OPTIONS", "/api/entries", 403),
               ("GET", "/api/entries?kb=notes", 403), ("GET", "/api/kbs", 403)]
    seen = access_log(server, mark, refused)
    for request in refused:
        assert request in seen, (request, seen)
    assert seen.count(("POST", "/api/kbs", 403)) == 2, seen  # both forms
    assert not [s for s in seen if s[2] < 400], seen

    # Nothing written: the entries, the KBs, the files and the folder the form named are as before.
    assert snapshot(server) == before, out
    assert not folder.parent.exists(), out
    # Nothing read: every answer is closed to the page.
    assert "error" in out["read"] and "error" in out["jsonPost"], out
    assert out["textPost"].get("type") == "opaque" and out["textPost"]["body"] == "", out
    assert out["img"] == "error" and out["script"] == "error", out
    # The WebSocket closes with 4403 and the reason, before any event.
    assert out["ws"]["messages"] == [], out
    assert out["ws"]["code"] == 4403 and EVIL_HOST in out["ws"]["reason"], out


def test_dns_rebinding_page_is_refused(server: Server, page: Any, tmp_path: Path) -> None:
    before = snapshot(server)
    entry_id = before["entries"][0][0]
    origin = f"http://{REBIND_HOST}:{server.port}"
    served: list[str] = []

    def first_answer(route: Any) -> None:
        # The attacker's server answered this first request, before its name switched to 127.0.0.1.
        served.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body=PAGE)

    page.route(f"{origin}/", first_answer)
    page.goto(f"{origin}/")
    folder = tmp_path / "rebound"
    out = page.evaluate("([f, e]) => sameOrigin(f, e)", [str(folder), f"/api/entries/notes/{entry_id}"])

    assert served == [f"{origin}/"]
    # The page's own-origin requests really reached pyrite (it can read the refusals) and were refused.
    for key in ("kbs", "entries", "post", "kbPost", "del"):
        assert out[key].get("status") == 400, (key, out)
        assert "is not allowed" in json.loads(out[key]["body"])["error"], (key, out)
    assert "Private plans" not in json.dumps(out) and '"notes"' not in out["kbs"]["body"], out
    assert snapshot(server) == before, out
    assert not folder.exists()
    assert out["ws"]["messages"] == [] and out["ws"]["code"] == 4400, out


def test_controls_the_browser_reaches_the_server(server: Server, page: Any) -> None:
    # A top-level navigation (a link the user followed) is served, and shows the JSON.
    response = page.goto(f"{server.url}/api/health")
    assert response is not None and response.status == 200
    assert json.loads(page.inner_text("body"))["status"] == "ok"
    # The same page logic, served as the server's own page (a loopback name), reads and writes.
    own = f"http://localhost:{server.port}"
    page.route(f"{own}/page", lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE))
    page.goto(f"{own}/page")
    got = page.evaluate("() => readText('/api/kbs')")
    assert got["status"] == 200 and "notes" in [k["name"] for k in json.loads(got["body"])["kbs"]], got


def test_control_a_listed_origin_reads_with_cors(tmp_path: Path, page: Any, attacker: str) -> None:
    # The attacker's exact page, once its origin is in PYRITE_ALLOWED_ORIGINS, reads the KB list: the
    # refusals above come from the origin rule, not from a broken setup.
    srv = _start(tmp_path, "allowed", {"PYRITE_ALLOWED_ORIGINS": attacker.rstrip("/")})
    try:
        page.goto(attacker)
        got = page.evaluate("t => readText(t + '/api/kbs')", srv.url)
        assert got.get("status") == 200, got
        assert [k["name"] for k in json.loads(got["body"])["kbs"]] == ["notes"]
        entries = page.evaluate("t => readText(t + '/api/entries?kb=notes')", srv.url)
        assert "Private plans" in entries["body"], entries
        assert srv.terminate() == 0, srv.log()[-2000:]
    finally:
        srv.kill()
