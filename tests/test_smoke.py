"""A first end-to-end pass through the core with the hash embedder."""

from pyrite.core import Pyrite


def test_create_search_delete(core: Pyrite) -> None:
    entry = core.kbs.create_entry("notes", "Kubernetes pods", "Pods are the smallest deployable units")
    assert entry.embedding_status == "done"
    hits = core.search.search("deployable", mode="keyword")["results"]
    assert [h["id"] for h in hits] == ["kubernetes-pods"]
    core.kbs.delete_entry("notes", entry.id)
    assert core.search.search("deployable", mode="keyword")["results"] == []
