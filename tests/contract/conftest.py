"""The `engine` fixture of the contract tests: each test runs on every engine of ENGINES, and
every store is sound afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_cli.store.base import Engine
from tests.helpers.engines import ENGINES


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ENGINES[request.param](request, tmp_path) as e:
        yield e
        assert e.check() == []
