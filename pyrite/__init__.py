"""pyrite: a local-first knowledge base of markdown files with a background embedding pipeline."""

__version__ = "0.1.0"
