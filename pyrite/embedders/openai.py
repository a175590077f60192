"""OpenAI-compatible `POST {url}/embeddings`: OpenAI, OpenRouter, Ollama, vLLM, TEI, Infinity, LiteLLM."""

from __future__ import annotations

from typing import Any

from pyrite.embedders.remote import RemoteEmbedder


class OpenAIEmbedder(RemoteEmbedder):
    """Sends `input` as a list with `model` (and `dimensions` when set); bearer auth when a key is set."""

    provider = "openai"
    default_url = "https://api.openai.com/v1"
    max_batch = 256  # OpenAI takes 2,048 inputs; smaller requests fail and retry more cheaply
    max_input_tokens = 8191

    def request(self, texts: list[str]) -> tuple[str, dict[str, str], dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.requested_dimensions:
            body["dimensions"] = self.requested_dimensions
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return f"{self.url}/embeddings", headers, body

    def vectors(self, answer: Any, count: int) -> list[list[float]]:
        data = answer["data"]
        # The spec promises input order via `index`; some servers omit it.
        if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
            data = sorted(data, key=lambda d: d["index"])
        return [d["embedding"] for d in data]
