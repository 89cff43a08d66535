"""Reading the queue as people and scripts do (issue 11): `list` at 80 columns and at 50,000
jobs, id-only output, several ids at once, what a job was asked, reruns, batches listed and
cancelled, every backend's models, one clock for people. The real CLI in this process
(`main(argv)`) over a real store; subprocesses where a pipe matters."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_cli.jobs import JobType, Priority
from ollama_cli.store import open_store
from ollama_cli.store.base import JobSpec
from tests.helpers.cli import assert_one_error, cli_env, ok_json, run_main

LONG_MODEL = "hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M"


@pytest.fixture
def columns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set the terminal width the table is made for (rich reads COLUMNS)."""
    def set_to(value: str) -> None:
        monkeypatch.setenv("COLUMNS", value)

    yield set_to


def queue(data_dir: Path, *specs: JobSpec, cancel: tuple[int, ...] = ()) -> None:
    """Jobs in the store, written through the engine; the store is closed again for the CLI."""
    with open_store(data_dir) as store:
        store.submit_many(list(specs), 1_000_000.0)
        if cancel:
            store.cancel(list(cancel), 1_000_001.0)


def job(model: str = "llama3.2", prompt: str = "hi", **kw: Any) -> JobSpec:
    return JobSpec(model=model, type=JobType.GENERATE, request={"prompt": prompt}, use_cache=False, **kw)


def lines(text: str) -> list[str]:
    return text.splitlines()


# ---------------------------------------------------------------------------- list: the table


@pytest.mark.parametrize("width", ["80", ""], ids=["COLUMNS=80", "pipe"])
def test_list_at_80_columns_keeps_id_and_status_whole(data_dir: Path, columns: Any, width: str) -> None:
    # A pipe without COLUMNS is 80 columns too: `ollama-q list | awk '{print $1}'` prints ids.
    queue(data_dir, job(LONG_MODEL, name="the nightly summary of everything"), job(),
          job(LONG_MODEL, name="x" * 60), cancel=(3,))
    columns(width)
    res = run_main("list")
    assert res.returncode == 0, res.stderr
    header, *rows = lines(res.stdout)
    assert header.split()[:2] == ["ID", "STATUS"]
    assert [r.split()[:2] for r in rows] == [["3", "cancelled"], ["2", "pending"], ["1", "pending"]]
    assert all(len(line) <= 80 for line in lines(res.stdout)), res.stdout
    assert "hf.co/" in rows[0] and "…" in rows[0]  # the model, shortened
    assert "the nightly" in rows[2]  # and the name
    assert "cancelled: " in rows[0] or "cancel" in rows[0]  # the error, shortened


def test_list_drops_optional_columns_before_it_cuts_id_or_status(data_dir: Path, columns: Any) -> None:
    queue(data_dir, job(LONG_MODEL, name="n" * 40, priority=Priority.URGENT))
    columns("30")
    header, row = lines(run_main("list").stdout)
    assert header.split() == ["ID", "STATUS", "MODEL"]
    assert row.split()[:2] == ["1", "pending"] and row.endswith("…")
    columns("200")  # room for everything: nothing shortened or left out
    header, row = lines(run_main("list").stdout)
    assert header.split() == ["ID", "STATUS", "PRIORITY", "TYPE", "MODEL", "NAME", "POS", "TRIES", "AGE"]
    assert LONG_MODEL in row and "n" * 40 in row and "…" not in row


def test_a_piped_list_prints_ids_through_awk(data_dir: Path) -> None:
    queue(data_dir, job(LONG_MODEL, name="a name with spaces"), job())
    out = subprocess.run(f"{sys.executable} -m ollama_cli list | awk '{{print $1}}'", shell=True,
                         capture_output=True, text=True, env=cli_env(data_dir, COLUMNS=""), timeout=60)
    assert out.stdout.split() == ["ID", "2", "1"], out


def test_list_shows_50_rows_and_says_how_many_more(data_dir: Path, columns: Any) -> None:
    queue(data_dir, *(job(prompt=str(i)) for i in range(60)), cancel=(1, 2))
    columns("100")
    res = run_main("list")
    assert len(lines(res.stdout)) == 1 + 50
    assert lines(res.stdout)[1].split()[0] == "60"
    assert res.stderr == "… 10 more; --limit 0 for all\n"
    res = run_main("list", "--limit", "0")
    assert len(lines(res.stdout)) == 1 + 60 and res.stderr == ""
    res = run_main("list", "--status", "pending", "--offset", "5")
    assert lines(res.stdout)[1].split()[0] == "55" and res.stderr == "… 3 more; --limit 0 for all\n"
    res = run_main("list", "--model", "llama3.2")  # no counter for a model: only that there are more
    assert len(lines(res.stdout)) == 1 + 50 and res.stderr == "… more; --limit 0 for all\n"
    res = run_main("list", "--limit", "20")  # a limit asked for is told the same
    assert len(lines(res.stdout)) == 1 + 20 and res.stderr == "… 40 more; --limit 0 for all\n"
    assert len(ok_json(run_main("list", "--json"))) == 60  # scripts get every job, as before
    assert len(ok_json(run_main("list", "--json", "--limit", "0"))) == 60


def test_list_prints_its_first_rows_before_it_reads_the_last(
        data_dir: Path, columns: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_cli.store.lmdb_engine import LmdbEngine

    queue(data_dir, *(job(prompt=str(i)) for i in range(2000)))
    read: list[int] = []
    list_jobs = LmdbEngine.list_jobs

    def counting(self: LmdbEngine, **kw: Any) -> Any:
        jobs, corrupt = list_jobs(self, **kw)
        read.append(len(jobs))
        return jobs, corrupt

    monkeypatch.setattr(LmdbEngine, "list_jobs", counting)

    class FirstWrite:
        """stdout that notes how many jobs had been read when the first row came."""

        def __init__(self) -> None:
            self.text, self.read_then = "", None

        def write(self, s: str) -> int:
            if self.read_then is None and "pending" in s:
                self.read_then = sum(read)
            self.text += s
            return len(s)

        def flush(self) -> None:
            pass

    out = FirstWrite()
    monkeypatch.setattr(sys, "stdout", out)
    columns("100")
    from ollama_cli.cli import main

    with pytest.raises(SystemExit):
        main(["list", "--limit", "0"])
    monkeypatch.undo()
    assert len(lines(out.text)) == 1 + 2000
    assert out.read_then is not None and out.read_then <= 400
    assert len(read) <= 6  # pages that grow: a few reads, not one per 100 rows


def test_list_by_model_takes_the_name_as_ollama_does(data_dir: Path) -> None:
    queue(data_dir, job("llama3.2"), job("llama3.2:latest"), job("llama3.2:1b"), job(LONG_MODEL))
    for name in ("llama3.2", "llama3.2:latest", "LLAMA3.2", "Llama3.2:Latest"):
        assert [r["id"] for r in ok_json(run_main("list", "--model", name, "--json"))] == [2, 1], name
    assert [r["id"] for r in ok_json(run_main("list", "--model", LONG_MODEL.lower(), "--json"))] == [4]
    assert "invalid model name" in assert_one_error(run_main("list", "--model", "no such model"), 2)


# ------------------------------------------------------------------------------ list -q


def test_list_quiet_prints_every_matching_id(data_dir: Path) -> None:
    queue(data_dir, *(job(prompt=str(i)) for i in range(120)), cancel=(7, 8))
    res = run_main("list", "-q")
    assert res.stdout == "".join(f"{i}\n" for i in range(120, 0, -1)) and res.stderr == ""
    assert run_main("list", "--quiet", "--status", "cancelled").stdout == "8\n7\n"
    assert run_main("list", "-q", "--limit", "2", "--offset", "1").stdout == "119\n118\n"
    assert_one_error(run_main("list", "-q", "--json"), 2)
