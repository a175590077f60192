"""Link syntax and resolution rules (pure functions): every link form, code ignored, Obsidian's choice of target."""

from __future__ import annotations

from pyrite.link_rules import (EMBED, MARKDOWN, WIKI, Link, choose, markdown_target, parse_links,
                               rewrite, wiki_target)


def one(body: str, source: str = "src") -> Link:
    found = parse_links(body, source)
    assert len(found) == 1, found
    return found[0]


def test_every_wiki_form() -> None:
    assert (one("[[Note]]").kind, one("[[Note]]").target, one("[[Note]]").key) == (WIKI, "Note", "note")
    aliased = one("see [[Note|the note]] here")
    assert (aliased.target, aliased.alias, aliased.fragment) == ("Note", "the note", "")
    assert one("[[Note#Some heading]]").fragment == "#Some heading"
    assert one("[[Note^block1]]").fragment == "^block1"
    assert one("[[Note#^block1|x]]").fragment == "#^block1"
    embed = one("![[Picture note]]")
    assert embed.kind == EMBED and embed.key == "picture note"
    table = one("| a | [[Note\\|alias]] |")
    assert (table.target, table.alias) == ("Note", "alias")
    assert one("[[Note.md]]").target == "Note"
    assert parse_links("[[#Heading in this note]]", "src") == []


def test_spans_cover_only_the_target_name() -> None:
    body = "x ![[Deep/Note#h|alias]] y"
    link = one(body)
    assert body[link.start:link.end] == "Deep/Note"
    assert link.by_path and link.key == "deep/note" and link.name_key == "note"


def test_markdown_links_relative_encoded_and_angle() -> None:
    plain = one("[text](other.md)", "Folder/src")
    assert (plain.kind, plain.key, plain.alias) == (MARKDOWN, "folder/other", "text")
    up = one("[t](../Top%20Note.md#Part)", "Folder/src")
    assert (up.key, up.fragment, up.target) == ("top note", "#Part", "../Top Note.md")
    angle = one("[t](<My Note.md>)")
    assert angle.key == "my note"
    assert one("[t](/Root/N.md)", "A/B/src").key == "root/n"
    titled = one('[t](x.md "a title")')
    assert titled.key == "x"


def test_not_links() -> None:
    body = (
        "[web](https://example.org/a.md) [mail](mailto:x@y.md) ![img](pic.png) [pdf](doc.pdf) [frag](#top)\n"
        "`[[inline code]]` and ``[[double `tick` code]]``\n"
        "```\n[[fenced]]\n[md](fenced.md)\n```\n"
        "~~~python\n[[tilde fenced]]\n~~~\n"
    )
    assert parse_links(body, "src") == []


def test_links_after_code_and_line_numbers() -> None:
    body = "first\n```\n[[no]]\n```\n`[[no]]` [[Yes]]\n\n[y](yes.md)\n"
    found = parse_links(body, "src", first_line=5)
    assert [(x.target, x.line) for x in found] == [("Yes", 9), ("yes.md", 11)]


def test_unclosed_fence_hides_the_rest() -> None:
    assert parse_links("[[a]]\n```\n[[b]]\n", "src")[0].target == "a"
    assert len(parse_links("[[a]]\n```\n[[b]]\n", "src")) == 1


def test_choose_unique_shortest_alphabetical_alias() -> None:
    bare = one("[[note]]")
    assert choose(bare, [(1, "a/b/note", False)]) == 1
    assert choose(bare, [(1, "deep/er/note", False), (2, "b/note", False)]) == 2  # shortest path
    assert choose(bare, [(1, "b/note", False), (2, "a/note", False)]) == 2  # tie: alphabetical
    assert choose(bare, [(1, "x", True), (2, "zzzzzz/note", False)]) == 2  # a file name beats an alias
    assert choose(bare, [(1, "alias-owner", True)]) == 1
    assert choose(bare, []) is None


def test_choose_paths_exact_then_suffix() -> None:
    pathed = one("[[Sub/Note]]")
    cands = [(1, "a/sub/note", False), (2, "sub/note", False), (3, "note", False)]
    assert choose(pathed, cands) == 2
    assert choose(pathed, [(1, "b/sub/note", False), (3, "note", False)]) == 1
    assert choose(pathed, [(3, "note", False), (4, "sub/note", True)]) is None  # aliases are names, not paths


def test_rewrite_targets_keep_style() -> None:
    assert wiki_target("Archive/New", had_path=False, bare_is_unique=True) == "New"
    assert wiki_target("Archive/New", had_path=False, bare_is_unique=False) == "Archive/New"
    assert wiki_target("Archive/New", had_path=True, bare_is_unique=True) == "Archive/New"
    body = "[a](../Old%20one.md) [b](<Old one.md>)"
    first, second = parse_links(body, "Folder/src")
    assert markdown_target(first, body, "Folder/src", "New one") == "../New%20one.md"
    assert markdown_target(second, body, "Folder/src", "Archive/New one") == "../Archive/New one.md"
    assert rewrite("abcdef", [(4, 5, "XY"), (0, 1, "")]) == "bcdXYf"
