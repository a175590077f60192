"""A fixture vault shaped like a real Obsidian one, written the way people and editors write files.

make_vault(root) writes it and returns what it wrote, so tests assert against the description rather than
repeating the layout. Other tests extend it: add files here and describe them in the returned dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# id -> file content (text written as UTF-8 unless a test below writes bytes itself)
NOTES: dict[str, str] = {
    "Welcome": "---\ntitle: Welcome\ntags: [start]\n---\n\n# Welcome\n\nSee [[Core plugins]] and [[Ideas]].\n",
    "Plugins/Core plugins": "# Core plugins\n\nThe plugins Obsidian ships with. Back to [[Welcome]].\n",
    "Plugins/Community/Dataview": "---\ntags: plugin\n---\n\nQueries over notes, like [[Core plugins|core]].\n",
    "Plugins/Community/Deep/Third level": "A note three folders down.\n",
    "Projects/Ideas": "# Ideas (projects)\n\nWhat to build next.\n",
    "Archive/Ideas": "# Ideas (archived)\n\nWhat we dropped.\n",
    "Projects/Q&A Tom's #1 list": "# Q&A\n\nTom's questions, with a hash in the name.\n",
    "Journal/2024-01-01": "---\ndate: 2024-01-01\n---\n\nNew year. [[Projects/Ideas#Next]]\n",
    "Café & Bar/Menu 🍷": "# Menu\n\nWine and tapas.\n",
    "日本語/東京タワー": "# 東京タワー\n\n東京の電波塔。\n",
    "Русский/Заметка": "Просто текст без заголовка.\n",
    "No frontmatter": "Just a body, no heading, no frontmatter.\n",
}
BROKEN_YAML_ID = "Broken YAML"

CRLF_ID = "Windows/CRLF note"
BOM_ID = "Windows/BOM note"
LATIN1_ID = "Windows/Latin-1 note"


def make_vault(root: Path) -> dict[str, Any]:
    """Write the fixture vault under root (made if missing); return a description of what was written.

    Keys: "entries" (id -> path of every file that must be indexed), "unreadable" (ids of .md files that
    are entries by path but are not UTF-8), "broken_yaml" (an id whose frontmatter does not parse), "skipped" (paths of .md files that must not be indexed),
    "attachments" (non-markdown files beside the notes), "ambiguous" (ids sharing the file name Ideas).
    """
    root.mkdir(parents=True, exist_ok=True)
    entries: dict[str, str] = {}

    def note(entry_id: str, data: bytes) -> None:
        path = root / f"{entry_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries[entry_id] = f"{entry_id}.md"

    for entry_id, text in NOTES.items():
        note(entry_id, text.encode("utf-8"))
    note(CRLF_ID, b"---\r\ntitle: Written on Windows\r\ntags: [crlf]\r\n---\r\n\r\nLine one.\r\nLine two.\r\n")
    note(BOM_ID, "\ufeff---\ntitle: Starts with a BOM\n---\n\nNotepad writes these.\n".encode("utf-8"))
    # Not UTF-8: a path that is a fine id, whose content cannot be read as text.
    latin1 = root / f"{LATIN1_ID}.md"
    latin1.write_bytes("---\ntitle: Caf\xe9\n---\n\nCr\xe8me br\xfbl\xe9e.\n".encode("latin-1"))
    (root / f"{BROKEN_YAML_ID}.md").write_text("---\ntitle: [unclosed\ntags: a\n---\n\nThe body still counts.\n",
                                              encoding="utf-8")
    entries[BROKEN_YAML_ID] = f"{BROKEN_YAML_ID}.md"  # indexed by its body, with a warning

    skipped: list[str] = []

    def hidden(rel: str, text: str = "# must not be indexed\n") -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if rel.endswith(".md"):
            skipped.append(rel)

    hidden(".obsidian/app.json", '{"legacyEditor": false}\n')
    hidden(".obsidian/workspace.json", '{"main": {}}\n')
    hidden(".obsidian/plugins/dataview/README.md")
    hidden(".trash/Deleted note.md")
    hidden(".git/HEAD", "ref: refs/heads/main\n")
    hidden(".hidden note.md")
    hidden("Plugins/.draft.md")
    hidden("node_modules/some-package/README.md")
    hidden("Projects/node_modules/x.md")
    hidden("build/generated.md")  # excluded by the root .gitignore
    hidden("Projects/scratch.tmp.md")  # excluded by a nested .gitignore
    hidden("Private/diary.md")  # excluded by .pyriteignore
    (root / ".gitignore").write_text("# build output\nbuild/\n*.log\n", encoding="utf-8")
    (root / "Projects" / ".gitignore").write_text("*.tmp.md\n", encoding="utf-8")
    (root / ".pyriteignore").write_text("Private/\n", encoding="utf-8")

    attachments = ["Plugins/screenshot.png", "Archive/paper.pdf", "Café & Bar/photo 1.jpg", "debug.log"]
    for rel in attachments:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return {
        "entries": entries,
        "unreadable": [LATIN1_ID],
        "skipped": skipped,
        "attachments": attachments,
        "ambiguous": ["Projects/Ideas", "Archive/Ideas"],
        "crlf": CRLF_ID,
        "bom": BOM_ID,
        "broken_yaml": BROKEN_YAML_ID,
        "no_frontmatter": ["No frontmatter", "Plugins/Community/Deep/Third level", "Русский/Заметка"],
    }
