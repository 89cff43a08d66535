"""Client behaviour that the emulator cannot provoke on demand. httpx's MockTransport
stands in for a server here, and only here."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ollama_cli.clients.base import BackendError, OllamaClient
from ollama_cli.settings.hosts import Backend
from ollama_cli.jobs import ErrorType, Job, JobStatus, JobType, Priority

JOB = Job(id=1, model="llama3.2", type=JobType.GENERATE, priority=Priority.MEDIUM,
          status=JobStatus.RUNNING, created_at=0.0)
STREAM = b'{"response":"Hi","done":false}\n{"response":"","done":true,"eval_count":1}\n'


def run_with(handler) -> dict:  # type: ignore[no-untyped-def]
    async def go() -> dict:
        client = OllamaClient(Backend("http://ollama.test"), transport=httpx.MockTransport(handler))
        try:
            return await client.run(JOB, {"prompt": "x"})
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_pooled_connection_closed_by_the_server_is_retried_once_at_no_cost() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:  # what httpcore raises when a kept-alive socket was closed
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, content=STREAM)

    assert run_with(handler)["response"] == "Hi"
    assert len(calls) == 2


def test_a_server_that_keeps_disconnecting_fails_the_attempt() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    with pytest.raises(BackendError) as err:
        run_with(handler)
    assert err.value.kind is ErrorType.BACKEND_ERROR and err.value.transient
