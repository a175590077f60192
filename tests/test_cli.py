"""The `pyrite` CLI through click's CliRunner, plus real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pyrite.cli import cli
from pyrite.config import load_settings
from pyrite.core import Pyrite
from pyrite.storage.files import parse_markdown
from tests.conftest import pyrite_cmd

ENTRY_KEYS = {"id", "kb", "title", "body", "type", "tags"}
RESULT_KEYS = {"id", "kb", "title", "score", "snippet"}


def run(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def ok(*args: str, input: str | bytes | None = None) -> Result:
    result = run(*args, input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def ok_json(*args: str, input: str | bytes | None = None) -> Any:
    result = ok(*args, "--format", "json", input=input)
    return json.loads(result.stdout)


def assert_user_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no uncaught exception
    assert "Error:" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for needle in needles:
        assert needle in result.stderr


def assert_usage_error(result: Result) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Error" in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def home(pyrite_home: Path) -> Path:
    ok("init")
    ok("kb", "create", "notes")
    return pyrite_home


def kb_folder(home: Path, name: str = "notes") -> Path:
    return home / "kbs" / name


def dirs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


# -- init and kb ----------------------------------------------------------------------------------


def test_init_creates_home(pyrite_home: Path) -> None:
    result = ok("init")
    assert (pyrite_home / "config.yaml").is_file()
    assert (pyrite_home / "index.db").is_file()
    assert str(pyrite_home) in result.stdout
    config = (pyrite_home / "config.yaml").read_text()
    (pyrite_home / "config.yaml").write_text(config + "# my edit\n")
    info = ok_json("init")
    assert info["config_created"] is False
    assert (pyrite_home / "config.yaml").read_text().endswith("# my edit\n")  # never overwritten
    assert {"home", "config", "database"} <= set(info)


def test_kb_create_list_remove(pyrite_home: Path, tmp_path: Path) -> None:
    created = ok_json("kb", "create", "notes")
    assert created["name"] == "notes"
    assert Path(created["path"]) == pyrite_home / "kbs" / "notes"
    assert (pyrite_home / "kbs" / "notes").is_dir()
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "existing.md").write_text("# Existing\n\nalready here\n")
    other = ok_json("kb", "create", "vault", "--path", str(vault))
    assert other["index"]["added"] == 1
    listed = ok_json("kb", "list")
    assert [k["name"] for k in listed["kbs"]] == ["notes", "vault"]
    assert {k["name"]: k["entries"] for k in listed["kbs"]} == {"notes": 0, "vault": 1}
    assert "vault" in ok("kb", "list").stdout

    removed = ok_json("kb", "remove", "vault")
    assert removed["removed"]["name"] == "vault"
    assert (vault / "existing.md").read_text() == "# Existing\n\nalready here\n"  # files stay
    assert [k["name"] for k in ok_json("kb", "list")["kbs"]] == ["notes"]
    assert_user_error(run("kb", "remove", "vault"), "vault")


@pytest.mark.parametrize("name", ["../x", "a/b", "", "k" * 65, "/abs/kb", "a\\b", "..", "has space", "a\x00b"])
def test_kb_create_bad_name(pyrite_home: Path, tmp_path: Path, name: str) -> None:
    ok("init")
    before = dirs(tmp_path)
    result = run("kb", "create", name)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "invalid KB name" in result.stderr
    assert "Traceback" not in result.output
    assert dirs(tmp_path) == before
    assert not Path("/abs/kb").exists()
    assert ok_json("kb", "list")["kbs"] == []


def test_kb_create_twice(home: Path) -> None:
    assert_user_error(run("kb", "create", "notes"), "exists")


# -- entries --------------------------------------------------------------------------------------


def test_create_with_body_tags_type_meta(home: Path) -> None:
    data = ok_json("create", "--kb", "notes", "--title", "Kubernetes pods", "--body", "Pods are small.",
                   "--tag", "k8s", "--tag", "infra", "--type", "howto", "--meta", "source=https://x.org/?a=b",
                   "--meta", "rating=5")
    assert ENTRY_KEYS <= set(data)
    assert data["id"] == "kubernetes-pods" and data["kb"] == "notes"
    assert data["title"] == "Kubernetes pods" and data["body"] == "Pods are small."
    assert data["tags"] == ["k8s", "infra"] and data["type"] == "howto"
    assert data["meta"] == {"source": "https://x.org/?a=b", "rating": "5"}
    front, body = parse_markdown((kb_folder(home) / "kubernetes-pods.md").read_text(encoding="utf-8"))
    assert front["tags"] == ["k8s", "infra"] and front["type"] == "howto"
    assert front["source"] == "https://x.org/?a=b" and front["rating"] == "5"
    assert body == "Pods are small."


def test_create_text_output(home: Path) -> None:
    result = ok("create", "--kb", "notes", "--title", "Plain", "--body", "x")
    assert "notes/plain" in result.stdout


def test_create_body_file(home: Path, tmp_path: Path) -> None:
    body = "# Heading\r\n\r\n日本語 and नमस्ते\n---\nnot frontmatter\n"
    src = tmp_path / "body.md"
    src.write_bytes(body.encode("utf-8"))
    data = ok_json("create", "--kb", "notes", "--title", "From file", "--body-file", str(src))
    assert data["body"] == body
    assert parse_markdown((kb_folder(home) / "from-file.md").read_bytes().decode("utf-8"))[1] == body


@pytest.mark.parametrize("how", [["-"], ["--body-file", "-"]])
def test_create_body_from_stdin(home: Path, how: list[str]) -> None:
    body = "piped in\nsecond line — ünïcödé 🎉\n"
    data = ok_json("create", "--kb", "notes", "--title", "Piped", *how, input=body.encode("utf-8"))
    assert data["body"] == body
    assert ok_json("get", data["id"], "--kb", "notes")["body"] == body


def test_get_update_delete_list(home: Path) -> None:
    created = ok_json("create", "--kb", "notes", "--title", "Life cycle", "--body", "v1", "--tag", "a")
    entry_id = created["id"]
    got = ok_json("get", entry_id, "--kb", "notes")
    assert ENTRY_KEYS <= set(got)
    assert (got["id"], got["title"], got["body"], got["tags"]) == (entry_id, "Life cycle", "v1", ["a"])
    assert "Life cycle" in ok("get", entry_id, "--kb", "notes").stdout

    updated = ok_json("update", entry_id, "--kb", "notes", "--title", "Life cycle renamed", "--tag", "b",
                      "--tag", "c", "--meta", "k=v", "-", input="v2 from stdin")
    assert ENTRY_KEYS <= set(updated)
    assert updated["id"] == entry_id
    assert (updated["title"], updated["body"], updated["tags"]) == ("Life cycle renamed", "v2 from stdin", ["b", "c"])
    assert updated["meta"] == {"k": "v"}
    # update without --tag keeps the tags
    again = ok_json("update", entry_id, "--kb", "notes", "--body", "v3")
    assert again["tags"] == ["b", "c"] and again["body"] == "v3" and again["meta"] == {"k": "v"}
    assert "Updated" in ok("update", entry_id, "--kb", "notes", "--type", "journal").stdout

    ok("create", "--kb", "notes", "--title", "Second")
    listed = ok_json("list-entries", "--kb", "notes")
    assert {e["id"] for e in listed["entries"]} == {entry_id, "second"}
    assert all({"id", "kb", "title"} <= set(e) for e in listed["entries"])
    assert len(ok_json("list-entries", "--kb", "notes", "--limit", "1")["entries"]) == 1
    assert entry_id in ok("list-entries", "--kb", "notes").stdout

    deleted = ok_json("delete", entry_id, "--kb", "notes")
    assert deleted == {"deleted": {"kb": "notes", "id": entry_id}}
    assert not (kb_folder(home) / f"{entry_id}.md").exists()
    assert_user_error(run("get", entry_id, "--kb", "notes"), entry_id)
    assert "Deleted" in ok("delete", "second", "--kb", "notes").stdout
    assert ok_json("list-entries", "--kb", "notes") == {"entries": []}


def test_search(home: Path) -> None:
    ok("create", "--kb", "notes", "--title", "Zebra facts", "--body", "stripes and herds")
    ok("create", "--kb", "notes", "--title", "Other", "--body", "a zebra in the body")
    for mode in ("keyword", "semantic", "hybrid"):
        answer = ok_json("search", "zebra", "--kb", "notes", "--mode", mode)
        assert isinstance(answer["results"], list) and answer["results"], mode
        for r in answer["results"]:
            assert RESULT_KEYS <= set(r), mode
            assert r["kb"] == "notes"
    keyword = ok_json("search", "zebra", "--mode", "keyword")
    assert [r["id"] for r in keyword["results"]] == ["zebra-facts", "other"]
    assert len(ok_json("search", "zebra", "--mode", "keyword", "--limit", "1")["results"]) == 1
    text = ok("search", "zebra", "--mode", "keyword").stdout
    assert "notes/zebra-facts" in text
    assert "No results." in ok("search", "nothingmatches", "--mode", "keyword").stdout


def test_index_build_and_sync_json(home: Path) -> None:
    (kb_folder(home) / "hand.md").write_text("# Hand written\n\nbody\n")
    built = ok_json("index", "build", "--kb", "notes")
    assert built["reports"][0]["added"] == 1
    (kb_folder(home) / "hand.md").unlink()
    synced = ok_json("index", "sync")
    assert synced["reports"][0]["removed"] == 1


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["get", "hello", "--kb", "nope"], "nope"),
    (["get", "missing", "--kb", "notes"], "missing"),
    (["get", "../x", "--kb", "notes"], "invalid entry id"),
    (["get", "a/b", "--kb", "notes"], "no entry 'a/b'"),  # a path id since issue 13
    (["get", "a//b", "--kb", "notes"], "invalid entry id"),
    (["update", "../x", "--kb", "notes", "--title", "t"], "invalid entry id"),
    (["update", "missing", "--kb", "notes", "--title", "t"], "missing"),
    (["delete", "missing", "--kb", "notes"], "missing"),
    (["delete", "../../etc/passwd", "--kb", "notes"], "invalid entry id"),
    (["create", "--kb", "nope", "--title", "t"], "nope"),
    (["create", "--kb", "../notes", "--title", "t"], "invalid KB name"),
    (["create", "--kb", "notes", "--title", ""], "title"),
    (["create", "--kb", "notes", "--title", "t", "--meta", "id=5"], "reserved"),
    (["create", "--kb", "notes", "--title", "t", "--type", "bad type"], "type"),
    (["list-entries", "--kb", "nope"], "nope"),
    (["search", "x", "--kb", "nope"], "nope"),
    (["search", "   "], "empty"),
    (["index", "sync", "--kb", "nope"], "nope"),
    (["kb", "remove", "nope"], "nope"),
])
def test_user_errors_exit_1(home: Path, args: list[str], needle: str) -> None:
    assert_user_error(run(*args), needle)


def test_user_error_with_json_format_is_still_an_error(home: Path) -> None:
    assert_user_error(run("get", "missing", "--kb", "notes", "--format", "json"), "missing")


@pytest.mark.parametrize("args", [
    ["create", "--title", "t"],
    ["create", "--kb", "notes"],
    ["get", "--kb", "notes"],
    ["get", "x"],
    ["search"],
    ["search", "x", "--mode", "fuzzy"],
    ["search", "x", "--limit", "0"],
    ["search", "x", "--limit", "many"],
    ["get", "x", "--kb", "notes", "--format", "xml"],
    ["no-such-command"],
    ["kb", "no-such-subcommand"],
    ["kb", "create"],
    ["create", "--kb", "notes", "--title", "t", "--body", "a", "--body-file", "f"],
    ["create", "--kb", "notes", "--title", "t", "--body", "a", "-"],
    ["create", "--kb", "notes", "--title", "t", "--meta", "novalue"],
    ["create", "--kb", "notes", "--title", "t", "--meta", "=v"],
    ["create", "--kb", "notes", "--title", "t", "extra-argument"],
    ["create", "--kb", "notes", "--title", "t", "--body-file", "/nonexistent/body.md"],
    ["list-entries", "--kb", "notes", "--limit", "0"],
    ["--no-such-flag"],
])
def test_usage_errors_exit_2(home: Path, args: list[str]) -> None:
    assert_usage_error(run(*args))
    assert ok_json("list-entries", "--kb", "notes") == {"entries": []}  # nothing was created


def test_body_file_not_utf8_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    assert_usage_error(run("create", "--kb", "notes", "--title", "t", "--body-file", str(bad)))


def test_bad_config_is_a_user_error(home: Path) -> None:
    (home / "config.yaml").write_text("no_such_setting: 1\n")
    assert_user_error(run("kb", "list"), "no_such_setting")


# -- real subprocesses ----------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYRITE_")}
    env.update(PYRITE_HOME=str(home), PYRITE_EMBED_PROVIDER="hash")
    return env


def _sub(home: Path, *args: str | bytes, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(pyrite_cmd(*args), env=_env(home), input=input, capture_output=True, timeout=60)  # type: ignore[arg-type]


def test_real_cli_in_a_subprocess(tmp_path: Path) -> None:
    home = tmp_path / "subhome"
    assert _sub(home, "kb", "create", "notes").returncode == 0
    created = _sub(home, "create", "--kb", "notes", "--title", "Über café", "--tag", "x", "--format", "json", "-",
                   input="body from a pipe — 日本語\n".encode("utf-8"))
    assert created.returncode == 0, created.stderr.decode()
    data = json.loads(created.stdout)
    assert ENTRY_KEYS <= set(data)
    # A new KB names files after titles as written (issue 13); the subprocess sees no PYRITE_KB_NAMES.
    assert data["id"] == "Über café" and data["body"] == "body from a pipe — 日本語\n"
    assert data["embedding_status"] == "done" and data["path"] == "Über café.md"
    assert (home / "kbs" / "notes" / "Über café.md").is_file()

    found = _sub(home, "search", "pipe", "--format", "json")
    assert found.returncode == 0, found.stderr.decode()
    results = json.loads(found.stdout)["results"]
    assert [(r["id"], r["path"]) for r in results] == [("Über café", "Über café.md")]
    assert RESULT_KEYS <= set(results[0])

    missing = _sub(home, "get", "../nope", "--kb", "notes")
    assert missing.returncode == 1
    assert missing.stderr.startswith(b"Error:") and b"Traceback" not in missing.stderr
    assert missing.stdout == b""


@pytest.mark.parametrize("args", [
    [b"search", b"abc\xff"],
    [b"create", b"--kb", b"notes", b"--title", b"caf\xe9"],
], ids=["search", "create"])
def test_undecodable_argv_is_an_error_not_a_traceback(tmp_path: Path, args: list[bytes]) -> None:
    """Bytes that are not UTF-8 in argv (a latin-1 terminal, a bad script) reach pyrite as lone surrogates."""
    home = tmp_path / "subhome"
    core = Pyrite(load_settings(home))
    core.kbs.create_kb("notes")
    core.close()
    done = _sub(home, *args)
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")[-600:]
    assert done.returncode in (0, 1, 2)
