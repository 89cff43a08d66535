"""The hostile backend double (tests/hostile.py) does what each act says, over real HTTP:
the tests of the client and daemon against it rely on that."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.hostile import Hostile, answer, body, echo, endless, lines, raw, silent, slowloris, status


def test_listings_are_polite_and_generations_get_the_acts_in_turn_the_last_one_again() -> None:
    with Hostile(status(429, headers={"Retry-After": "7"}), lines(*answer("Hi"))) as h:
        tags = httpx.get(f"{h.url}/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["llama3.2:latest", "all-minilm:latest"]
        first = httpx.post(f"{h.url}/api/generate", json={"prompt": "a"})
        assert first.status_code == 429 and first.headers["retry-after"] == "7"
        assert first.json() == {"error": "try again later"}
        for _ in range(2):
            reply = httpx.post(f"{h.url}/api/generate", json={"prompt": "b"})
            assert [json.loads(line) for line in reply.text.splitlines()] == answer("Hi")
        assert h.paths() == ["/api/tags"] + ["/api/generate"] * 3 and h.generations() == 3
        assert h.requests[1][2] == {"prompt": "a"}


def test_sse_lines_and_raw_bodies() -> None:
    with Hostile(lines({"choices": []}, "[DONE]", sse=True), body(b"\x00not json", 500)) as h:
        assert httpx.post(f"{h.url}/v1/completions", json={}).text == 'data: {"choices": []}\n\ndata: [DONE]\n\n'
        raw = httpx.post(f"{h.url}/v1/completions", json={})
        assert raw.status_code == 500 and raw.content == b"\x00not json"


def test_raw_bytes_are_the_whole_reply() -> None:
    with Hostile(raw(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 2\r\n\r\nhi")) as h:
        reply = httpx.post(f"{h.url}/api/generate", json={})
        assert reply.status_code == 418 and reply.text == "hi"


def test_echo_quotes_the_request() -> None:
    with Hostile(echo(422)) as h:
        reply = httpx.post(f"{h.url}/api/generate", json={"prompt": "the secret plan"})
        assert reply.status_code == 422 and "the secret plan" in reply.json()["error"]


def test_an_endless_stream_goes_on_until_the_client_hangs_up() -> None:
    with Hostile(endless()) as h:
        with httpx.stream("POST", f"{h.url}/api/generate", json={}) as reply:
            got = 0
            for chunk in reply.iter_bytes():
                got += len(chunk)
                if got > 4 * 2**20:
                    break
        assert h.wait_hangups(1)
        assert h.sent > 4 * 2**20


def test_slowloris_sends_a_byte_at_a_time_until_the_client_hangs_up() -> None:
    with Hostile(slowloris(every=0.001)) as h:
        with httpx.stream("POST", f"{h.url}/api/generate", json={}) as reply:
            chunks = []
            for chunk in reply.iter_raw():
                chunks.append(chunk)
                if len(chunks) == 3:
                    break
        assert chunks == [b"\n"] * 3
        assert h.wait_hangups(1)


@pytest.mark.parametrize("path", ["/api/tags", "/api/generate"])
def test_a_black_hole_reads_requests_and_answers_none(path: str) -> None:
    with Hostile.black_hole() as h:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{h.url}{path}", json={"x": 1}, timeout=httpx.Timeout(5.0, read=0.05))
        assert h.wait_requests(1, path=path)
        assert h.wait_hangups(1)  # it noticed the client give up


def test_stop_ends_a_held_request() -> None:
    h = Hostile(silent).start()
    failed: list[Exception] = []

    def ask() -> None:
        try:
            httpx.post(f"{h.url}/api/generate", json={}, timeout=30)
        except httpx.HTTPError as exc:
            failed.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    assert h.wait_requests(1)
    h.stop()
    asker.join(30)
    assert not asker.is_alive() and len(failed) == 1
    assert h.hangups == 0  # stopping is not the client hanging up
