"""Clients that speak to backends: what every client shares (`base.py`: the Client, its
errors and how replies are read within bounds), Ollama's native API (`ollama.py`) and
OpenAI-compatible servers (`openai.py`). `client_for` picks one for a backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from ollama_cli.clients.base import Client
    from ollama_cli.settings.hosts import Backend


def client_for(backend: Backend, *, transport: httpx.AsyncBaseTransport | None = None) -> Client:
    """The client for a backend's kind; `transport` lets tests put a server in process."""
    if backend.kind == "openai":
        from ollama_cli.clients.openai import OpenAIClient

        return OpenAIClient(backend, transport=transport)
    from ollama_cli.clients.ollama import OllamaClient

    return OllamaClient(backend, transport=transport)
