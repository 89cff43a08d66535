"""The LMDB store: private files, durability across opens, map growth that nobody sees,
prefix scans, counters, and the multi-process hazards (a map grown by another process,
a reader killed while it held a transaction, a lock file replaced under it)."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from ollama_cli.errors import StoreLockLost
from ollama_cli.store.keys import u64
from ollama_cli.store.lmdb import MAX_DBS, MAX_READERS, Store, Tx
from tests.helpers.processes import run_python, start_python

SMALL_MAP = 64 * 1024


def reader_pids(store: Store) -> set[int]:
    """The pids holding slots in the reader table (`env.readers()` is a text table)."""
    pids = set()
    for line in store.env.readers().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0].isdigit():
            pids.add(int(fields[0]))
    return pids


@pytest.fixture
def umask_zero() -> Iterator[None]:
    # With no umask to hide behind, the modes must come from the store itself.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------ files


def test_new_folder_is_0700_and_files_0600(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "fresh"
    with Store(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    files = sorted(p.name for p in path.iterdir())
    assert files == ["data.mdb", "lock.mdb"]
    for name in files:
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600, name


def test_reopen_sees_committed_data(data_dir: Path) -> None:
    with Store(data_dir) as s:
        s.write(lambda tx: tx.put("jobs", u64(1), b"one"))
        s.write(lambda tx: tx.add("next_id", 7))
    with Store(data_dir) as s, s.read() as tx:
        assert tx.get("jobs", u64(1)) == b"one"
        assert tx.counter("next_id") == 7


# ----------------------------------------------------------------------- writes


def test_a_store_refuses_to_write_once_its_lock_file_changed(tmp_path: Path) -> None:
    with Store(tmp_path / "store") as store:
        assert not store.lock_file_changed()
        lock = tmp_path / "store" / "lock.mdb"
        lock.rename(tmp_path / "old-lock")
        lock.write_bytes(b"")  # another process made a new one
        assert store.lock_file_changed()
        with pytest.raises(StoreLockLost):
            store.write(lambda tx: tx.put("meta", b"k", u64(1)))


def test_map_grows_from_a_tiny_size_without_map_full(data_dir: Path) -> None:
    values = {i: bytes([i % 251]) * 300 for i in range(4000)}
    with Store(data_dir, map_size=SMALL_MAP) as s:
        start = s.env.info()["map_size"]
        # Many small transactions, each of which may be the one that fills the map.
        for chunk in range(0, 2000, 100):
            s.write(lambda tx, c=chunk: [tx.put("results", u64(i), values[i]) for i in range(c, c + 100)])

        # One transaction far larger than the map: it must be rerun whole after growing,
        # so its counter moves once, not once per attempt.
        def big(tx: Tx) -> int:
            for i in range(2000, 4000):
                tx.put("results", u64(i), values[i])
            return tx.add("batches_written", 1)

        assert s.write(big) == 1
        assert s.env.info()["map_size"] > start
    with Store(data_dir, map_size=SMALL_MAP) as s, s.read() as tx:
        assert tx.counter("batches_written") == 1
        assert tx.entries("results") == len(values)
        assert dict((int.from_bytes(k, "big"), v) for k, v in tx.scan("results")) == values


def test_a_write_that_raises_leaves_no_trace(data_dir: Path) -> None:
    with Store(data_dir, map_size=SMALL_MAP) as s:
        s.write(lambda tx: tx.put("meta", b"kept", b"1"))

        def half(tx: Tx) -> None:
            tx.put("meta", b"kept", b"2")
            tx.add("n", 5)
            for i in range(500):  # past the tiny map: the failure may come after a growth
                tx.put("jobs", u64(i), b"x" * 200)
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            s.write(half)
        with s.read() as tx:
            assert tx.get("meta", b"kept") == b"1"
            assert tx.counter("n") == 0
            assert tx.entries("jobs") == 0


# ------------------------------------------------------------------------- scans

# Keys chosen around the edges of prefix arithmetic: 0xFF tails, the first and last
# possible keys, a prefix that is itself a key.
KEYS = sorted({
    b"\x00", b"\x00\x00", b"\x01", b"\x01\x00", b"\x01\xfe", b"\x01\xfe\xff", b"\x01\xff",
    b"\x01\xff\x00", b"\x01\xff\xff", b"\x01\xff\xff\x07", b"\x02", b"\x02\x01", b"a", b"ab",
    b"abc", b"abd", b"b", b"\xfe\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\xff",
})
PREFIXES = [b"", b"\x00", b"\x01", b"\x01\xfe", b"\x01\xff", b"\x01\xff\xff", b"\x02", b"a",
            b"ab", b"abc", b"abz", b"c", b"\xfe", b"\xff", b"\xff\xff", b"\xff\xff\xff\xff",
            b"\x03"]


@pytest.fixture
def keyed(kv: Store) -> Store:
    kv.write(lambda tx: [tx.put("meta", k, k[::-1] + b"!") for k in KEYS])
    return kv


@pytest.mark.parametrize("prefix", PREFIXES, ids=lambda p: p.hex() or "empty")
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_scan_matches_a_sorted_filter(keyed: Store, prefix: bytes, reverse: bool) -> None:
    expected = [(k, k[::-1] + b"!") for k in KEYS if k.startswith(prefix)]
    if reverse:
        expected.reverse()
    with keyed.read() as tx:
        assert list(tx.scan("meta", prefix, reverse=reverse)) == expected


def test_scan_reverse_when_the_prefix_run_is_first_or_last(kv: Store) -> None:
    # The reverse scan positions past the run, then steps back: both ends of the table.
    kv.write(lambda tx: [tx.put("jobs", k) for k in (b"\x10\x01", b"\x10\x02", b"\x20\x01")])
    with kv.read() as tx:
        assert [k for k, _ in tx.scan("jobs", b"\x10", reverse=True)] == [b"\x10\x02", b"\x10\x01"]
        assert [k for k, _ in tx.scan("jobs", b"\x20", reverse=True)] == [b"\x20\x01"]
        assert list(tx.scan("jobs", b"\x05", reverse=True)) == []
        assert list(tx.scan("jobs", b"\x30", reverse=True)) == []
        assert list(tx.scan("status", reverse=True)) == []  # an empty table
        assert list(tx.scan("status")) == []


def test_scan_start_positions_a_forward_scan(keyed: Store) -> None:
    with keyed.read() as tx:
        got = [k for k, _ in tx.scan("meta", b"\x01", start=b"\x01\xfe\xff")]
    assert got == [k for k in KEYS if k.startswith(b"\x01") and k >= b"\x01\xfe\xff"]


@pytest.mark.parametrize(("prefix", "start"), [
    (b"\x01", b"\x01\xfe\xff"),  # a key: from it
    (b"\x01", b"\x01\xff\x01"),  # between keys: from the one below
    (b"\x01", b"\x01"),  # the prefix itself is a key
    (b"\xff", b"\xff\xff\xff\xff"),  # past the last key of the table
    (b"a", b"a\x00"),  # below the first key of the run but the prefix
    (b"\x03", b"\x03\x01"),  # no key of the prefix at all
])
def test_scan_start_positions_a_reverse_scan_at_the_last_key_not_above_it(
        keyed: Store, prefix: bytes, start: bytes) -> None:
    with keyed.read() as tx:
        got = [k for k, _ in tx.scan("meta", prefix, start=start, reverse=True)]
    assert got == [k for k in reversed(KEYS) if k.startswith(prefix) and k <= start]


# ---------------------------------------------------------------------- counters


def test_counters_start_at_zero_add_and_never_go_negative(kv: Store) -> None:
    with kv.read() as tx:
        assert tx.counter("count/pending") == 0
    assert kv.write(lambda tx: tx.add("count/pending", 3)) == 3
    assert kv.write(lambda tx: tx.add("count/pending", -1)) == 2
    assert kv.write(lambda tx: tx.add("count/pending", -10)) == 0
    assert kv.write(lambda tx: (tx.add("a", 1), tx.add("a", 1), tx.counter("a"))) == (1, 2, 2)
    with kv.read() as tx:
        assert tx.counter("count/pending") == 0
        assert tx.counter("a") == 2
        # Counters are big-endian u64 in `meta`, next to the flags.
        assert tx.get("meta", b"a") == u64(2)


def test_entries_and_clear(kv: Store) -> None:
    kv.write(lambda tx: [tx.put("cache", u64(i), b"v") for i in range(5)])
    with kv.read() as tx:
        assert tx.entries("cache") == 5
    kv.write(lambda tx: tx.clear("cache"))
    with kv.read() as tx:
        assert tx.entries("cache") == 0
        assert tx.get("cache", u64(1)) is None


def test_delete_reports_whether_the_key_was_there(kv: Store) -> None:
    kv.write(lambda tx: tx.put("blocked", u64(1)))
    assert kv.write(lambda tx: tx.delete("blocked", u64(1))) is True
    assert kv.write(lambda tx: tx.delete("blocked", u64(1))) is False


# ------------------------------------------------------------------ two processes


def test_map_grown_by_another_process_is_adopted(data_dir: Path) -> None:
    with Store(data_dir, map_size=SMALL_MAP) as s:
        s.write(lambda tx: tx.put("meta", b"mine", b"1"))
        ours = s.env.info()["map_size"]
        # The other process writes far past our map, so our next transaction meets
        # MapResizedError, which the store must absorb.
        child = run_python(f"""
            from ollama_cli.store.lmdb import Store
            from ollama_cli.store.keys import u64
            s = Store({str(data_dir)!r}, map_size={SMALL_MAP})
            s.write(lambda tx: [tx.put("results", u64(i), b"z" * 300) for i in range(5000)])
            print(s.env.info()["map_size"])
        """)
        assert child.returncode == 0, child.stderr
        theirs = int(child.stdout)
        assert theirs > ours
        # The premise: a bare LMDB transaction here now fails until the map is adopted.
        with pytest.raises(lmdb.MapResizedError):
            s.env.begin().abort()
        with s.read() as tx:
            assert tx.entries("results") == 5000
            assert tx.get("results", u64(4999)) == b"z" * 300
            assert tx.get("meta", b"mine") == b"1"
        s.write(lambda tx: tx.put("meta", b"after", b"2"))
        assert s.env.info()["map_size"] >= theirs
        with s.read() as tx:
            assert tx.get("meta", b"after") == b"2"


def test_reader_killed_mid_transaction_leaves_a_slot_that_opening_clears(kv: Store) -> None:
    # `kv` stays open throughout, so the lock file is never re-initialised and the
    # dead reader's slot survives until someone runs reader_check.
    holder = start_python(f"""
        import time
        from ollama_cli.store.lmdb import Store
        s = Store({str(kv.path)!r})
        with s.read() as tx:
            print("holding", flush=True)
            time.sleep(600)
    """)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"holding\n"
        assert holder.pid in reader_pids(kv)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)
    assert holder.returncode == -signal.SIGKILL
    assert holder.pid in reader_pids(kv)  # stale: LMDB does not reclaim it by itself

    opener = run_python(f"from ollama_cli.store.lmdb import Store\nStore({str(kv.path)!r}).close()")
    assert opener.returncode == 0, opener.stderr
    assert holder.pid not in reader_pids(kv)
    # And the kv works on, for reads and writes.
    kv.write(lambda tx: tx.put("meta", b"k", b"v"))
    with kv.read() as tx:
        assert tx.get("meta", b"k") == b"v"


def test_opening_an_existing_store_does_not_wait_for_a_writer(data_dir: Path) -> None:
    # Readers never wait on writers in LMDB; opening the store for `status` should not
    # either, or every command stalls behind a daemon's or a big batch's write.
    with Store(data_dir):
        pass
    env = lmdb.open(str(data_dir), max_dbs=MAX_DBS, max_readers=MAX_READERS)
    try:
        txn = env.begin(write=True)  # hold the writer lock in this process
        try:
            # The bound covers only the open (imports are done first); a healthy open
            # takes about a millisecond. faulthandler's watchdog is a C thread, so it
            # fires even though the blocked call keeps the GIL.
            child = run_python(f"""
                import faulthandler
                from ollama_cli.store.lmdb import Store
                faulthandler.dump_traceback_later(3, exit=True)
                Store({str(data_dir)!r}, readonly=True)
                faulthandler.cancel_dump_traceback_later()
                print("opened")
            """, timeout=30)
        finally:
            txn.abort()
    finally:
        env.close()
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "opened"
