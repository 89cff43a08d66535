"""Human tables show outside text (names, models, errors, listings) as plain one-line text:
never rich markup, never a terminal escape, never a stored 10 MB error whole."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_cli import render

NAME = "\x1b[31mred\x1b]0;title\x07 [/] [bold]x"
ERROR = {"type": "backend_error", "message": "HTTP 500: \x1b[2Jone\ntwo\r\u202e" + "y" * 100_000}


def row(**fields: Any) -> dict[str, Any]:
    return {"id": 1, "status": "failed", "priority": "medium", "type": "generate", "model": "llama3.2",
            "name": None, "position": None, "attempts": 1, "max_attempts": 1, "created_at": None,
            "error": None, **fields}


def shown(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\r" not in out
    return out


def test_list_shows_a_name_and_an_error_as_plain_text(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # room for the name whole
    render.jobs_table([row(name=NAME, model="[/]m", error=ERROR)])
    out = shown(capsys)
    assert "[/]" in out and "[bold]" in out  # shown, not taken for markup
    assert len(out.splitlines()) == 2  # the header and one row: no line break from the error


def test_status_shows_every_value_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    render.job_detail(row(name=NAME, error=ERROR, after=[]))
    out = shown(capsys)
    assert "red" in out and "[/] [bold]x" in out and "two" in out
    assert len(out) < 2 * render.SHOWN_MAX + 1000


def test_models_shows_a_listing_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    render.models_table([{"name": NAME, "size": 1, "family": "[/]", "parameter_size": "\x1b[5m",
                          "quantization_level": None, "loaded": False}])
    assert "[/]" in shown(capsys)
