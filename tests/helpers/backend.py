"""The backend's side: what the emulator was asked to generate, and what a fault-free
emulator answers (it is deterministic, so that is what a job's result must be)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from tests.emulator import Emulator

GENERATION_PATHS = ("/api/generate", "/api/chat", "/api/embed")


def generation_requests(emu: Emulator, *paths: str) -> list[Any]:
    """The bodies of the generation requests `emu` received on `paths` (every native
    generation path unless told), in order. A body a kill cut short is None."""
    wanted = paths or GENERATION_PATHS
    return [body for _, path, body in list(emu.requests) if path in wanted]


def clean_answers(prompts: Iterable[str], model: str = "llama3.2",
                  options: dict[str, Any] | None = None) -> dict[str, str]:
    """What a fresh emulator, with no faults, answers to each generate prompt (with `options`)."""
    extra = {"options": options} if options else {}
    with Emulator() as clean, httpx.Client(base_url=clean.url, timeout=30) as http:
        return {p: http.post("/api/generate", json={"model": model, "prompt": p, "stream": False, **extra})
                .json()["response"] for p in prompts}
