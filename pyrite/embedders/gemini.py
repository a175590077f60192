"""Google Gemini `POST {url}/models/{model}:batchEmbedContents`."""

from __future__ import annotations

from typing import Any

from pyrite.embedders.remote import RemoteEmbedder


class GeminiEmbedder(RemoteEmbedder):
    """One request per batch of up to 100 texts; key in the x-goog-api-key header, never in the URL."""

    provider = "gemini"
    default_url = "https://generativelanguage.googleapis.com/v1beta"
    max_batch = 100
    max_input_tokens = 2048

    def request(self, texts: list[str]) -> tuple[str, dict[str, str], dict[str, Any]]:
        model = self.model if self.model.startswith("models/") else f"models/{self.model}"
        item: dict[str, Any] = {"model": model}
        if self.requested_dimensions:
            item["outputDimensionality"] = self.requested_dimensions
        body = {"requests": [dict(item, content={"parts": [{"text": t}]}) for t in texts]}
        headers = {"x-goog-api-key": self.api_key} if self.api_key else {}
        return f"{self.url}/{model}:batchEmbedContents", headers, body

    def vectors(self, answer: Any, count: int) -> list[list[float]]:
        return [e["values"] for e in answer["embeddings"]]
