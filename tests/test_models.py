"""The job record: its msgpack form survives a round trip, any bad bytes become
CorruptRecord (never another exception), and `to_json` is the contract's shape."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import msgpack
import pytest

from ollama_cli.errors import CorruptRecord
from ollama_cli.codec import SCHEMA, decode_job, encode_job, pack, unpack
from ollama_cli.jobs import ErrorType, Job, JobError, JobStatus, JobType, Lease, Priority

# 2026-11-23T08:40:00.123Z, the contract's example
T0 = 1795423200.123

FULL = Job(
    id=42,
    model="llama3.2",
    type=JobType.CHAT,
    priority=Priority.HIGH,
    status=JobStatus.FAILED,
    created_at=T0,
    name="nightly",
    batch="b-1",
    custom_id="req-7",
    attempts=3,
    max_attempts=4,
    run_at=T0 + 60,
    after=(3, 5, 8),
    host="http://127.0.0.1:11434",
    started_at=T0 + 61.5,
    finished_at=T0 + 90.25,
    error=JobError(ErrorType.BACKEND_ERROR, "boom: ünïcode"),
    cached=True,
    fallbacks=("qwen2.5", "mistral:7b"),
    route=("best", 0.6125, 12),
    timeout=600.0,
    keep_alive=-1.0,
    cache_key=bytes(range(32)),
    lease=Lease("1234-abcd", "00ff00ff00ff00ff"),
    retry_at=T0 + 70,
    category="code",
    feedback=(0.5, "fine", "code"),
    cache_hit=("semantic", 7, 0.97),
    semantic=True,
)

MINIMAL = Job(id=1, model="m", type=JobType.GENERATE, priority=Priority.MEDIUM,
              status=JobStatus.PENDING, created_at=T0)

# The contract's job object, in its order.
CONTRACT_KEYS = ["id", "name", "batch", "custom_id", "model", "type", "priority", "status",
                 "position", "attempts", "max_attempts", "run_at", "after", "host",
                 "created_at", "started_at", "finished_at", "error", "cached", "cache", "category", "feedback", "fallbacks",
                 "route"]
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def record(job: Job = FULL, **changes: Any) -> dict[str, Any]:
    """The stored map of a job, to be broken one field at a time."""
    rec = msgpack.unpackb(encode_job(job), raw=False)
    rec.update(changes)
    return rec


def without(field: str) -> bytes:
    rec = record()
    del rec[field]
    return pack(rec)


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("job", [FULL, MINIMAL], ids=["full", "minimal"])
def test_round_trip(job: Job) -> None:
    back = decode_job(job.id, encode_job(job))
    assert back == job
    # Types too, not only values: enums stay enums, tuples stay tuples.
    assert type(back.type) is JobType and type(back.status) is JobStatus
    assert isinstance(back.after, tuple) and isinstance(back.fallbacks, tuple)
    assert back.error == job.error and (back.error is None or type(back.error.type) is ErrorType)
    assert back.lease == job.lease


def test_every_field_is_stored() -> None:
    # A field added to Job but forgotten in encode_job would come back as its default.
    rec = record()
    assert set(Job._fields) <= set(rec), set(Job._fields) - set(rec)
    assert rec["v"] == SCHEMA


def test_unset_fields_are_left_out_and_records_with_every_key_still_read() -> None:
    # Earlier versions stored every key, null or not; the store may hold such records.
    assert set(record(MINIMAL)) == {"v", "id", "model", "type", "priority", "status", "created_at",
                                    "attempts", "max_attempts"}
    every_key = {**{f: None for f in Job._fields}, **record(MINIMAL), "after": [], "cached": False}
    assert decode_job(MINIMAL.id, pack(every_key)) == MINIMAL


# --------------------------------------------------------------- corrupt input

GOOD = encode_job(FULL)
UTF8_BAD_VALUE = pack({**record(), "model": "XX"}).replace(b"\xa2XX", b"\xa2\xff\xfe")
UTF8_BAD_KEY = b"\x81\xa2\xc3\x28\x01"  # {b"\xc3\x28": 1}: an invalid 2-byte sequence

CORRUPT: dict[str, bytes] = {
    "empty": b"",
    "truncated by one": GOOD[:-1],
    "truncated by half": GOOD[: len(GOOD) // 2],
    "first byte only": GOOD[:1],
    "trailing byte": GOOD + b"\x00",
    "trailing record": GOOD + GOOD,
    "0xc1 alone": b"\xc1",
    "0xc1 inside": GOOD[:10] + b"\xc1" + GOOD[11:],
    "str32 of 4 GiB": b"\xdb\xff\xff\xff\xffabc",
    "bin32 of 4 GiB": b"\xc6\xff\xff\xff\xff",
    "array32 of 4G items": b"\xdd\xff\xff\xff\xff\x01",
    "map32 of 4G pairs": b"\xdf\xff\xff\xff\xff",
    "ext32 of 4 GiB": b"\xc9\xff\xff\xff\xff\x01",
    "deep nesting": b"\x91" * 100_000 + b"\xc0",
    "deep maps": b"\x81\xa1k" * 50_000 + b"\xc0",
    "invalid utf-8 value": UTF8_BAD_VALUE,
    "invalid utf-8 key": UTF8_BAD_KEY,
    "int map key": pack({1: 2}),
    "nil": pack(None),
    "an int": pack(7),
    "a string": pack("job"),
    "a list": pack([1, "m"]),
    "an ext type": pack(msgpack.ExtType(5, b"xyz")),
    "schema 2": pack(record(v=SCHEMA + 1)),
    "schema 0": pack(record(v=0)),
    "schema as string": pack(record(v=str(SCHEMA))),
    "no schema": without("v"),
    "no id": without("id"),
    "no model": without("model"),
    "no type": without("type"),
    "no priority": without("priority"),
    "no status": without("status"),
    "no created_at": without("created_at"),
    "id not a number": pack(record(id="forty-two")),
    "id a list": pack(record(id=[42])),
    "unknown type": pack(record(type="image")),
    "unknown priority": pack(record(priority="critical")),
    "unknown status": pack(record(status="lost")),
    "status as int": pack(record(status=1)),
    "created_at a word": pack(record(created_at="yesterday")),
    "created_at nil": pack(record(created_at=None)),
    "created_at a timestamp ext": pack(record(created_at=msgpack.Timestamp(1, 0))),
    "after not ints": pack(record(after=["x"])),
    "after an int": pack(record(after=5)),
    "fallbacks not names": pack(record(fallbacks=[1])),
    "fallbacks a name": pack(record(fallbacks="qwen2.5")),
    "route too short": pack(record(route=["best", 0.5])),
    "route rated a word": pack(record(route=["best", 0.5, "many"])),
    "route a map": pack(record(route={"rule": "best"})),
    "error too short": pack(record(error=["backend_error"])),
    "unknown error type": pack(record(error=["oops", "m"])),
    "error a map": pack(record(error={"type": "timeout"})),
    "lease too short": pack(record(lease=["owner"])),
    "attempts a word": pack(record(attempts="three")),
}


@pytest.mark.parametrize("data", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_input_is_corrupt_record(data: bytes) -> None:
    # pytest.raises lets any other exception through, which fails the test.
    with pytest.raises(CorruptRecord) as info:
        decode_job(42, data)
    assert info.value.key == 42
    assert "42" in info.value.message


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\xdb\xff\xff\xff\xff", GOOD + b"\x00",
                                  b"\x91" * 100_000, UTF8_BAD_KEY],
                         ids=["empty", "0xc1", "huge str", "trailing", "deep", "bad utf-8 key"])
def test_unpack_turns_any_failure_into_corrupt_record(data: bytes) -> None:
    # The results and requests tables go through unpack alone.
    with pytest.raises(CorruptRecord):
        unpack(b"key", data)


def test_random_damage_gives_a_job_or_corrupt_record() -> None:
    """Flipped, dropped and inserted bytes anywhere in a real record: decode_job either
    returns a Job or raises CorruptRecord, nothing else."""
    rng = random.Random(20261123)  # fixed: a failure is reproducible
    outcomes = {"job": 0, "corrupt": 0}
    for _ in range(3000):
        data = bytearray(GOOD)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            action = rng.random()
            if action < 0.6:
                data[i] = rng.randrange(256)
            elif action < 0.8:
                del data[i]
            else:
                data.insert(i, rng.randrange(256))
        try:
            job = decode_job(1, bytes(data))
        except CorruptRecord:
            outcomes["corrupt"] += 1
        else:
            assert isinstance(job, Job)
            outcomes["job"] += 1
    assert outcomes["corrupt"] > 0 and outcomes["job"] > 0  # both paths were exercised


# Wrongly typed fields that decode_job lets through today: the Job it returns then
# breaks whoever uses it (to_json raises TypeError in format_time, the daemon gets a
# string timeout), so `status` on such a record is a traceback instead of an error line.
WRONG_TYPES: dict[str, dict[str, Any]] = {
    "run_at a word": {"run_at": "soon"},
    "started_at a word": {"started_at": "soon"},
    "finished_at a list": {"finished_at": [1]},
    "retry_at a word": {"retry_at": "soon"},
    "timeout a word": {"timeout": "10m"},
    "keep_alive a map": {"keep_alive": {}},
    "name an int": {"name": 123},
    "host a list": {"host": ["h"]},
    "cache_key an int": {"cache_key": 5},
    "lease a string": {"lease": "ab"},
    "cached a string": {"cached": "no"},
    "category an int": {"category": 5},
    "feedback a number": {"feedback": 0.5},
    "feedback's score a word": {"feedback": ["good", None, None]},
    "feedback's reason a number": {"feedback": [0.5, 1, None]},
}


@pytest.mark.parametrize("changes", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrongly_typed_optional_field_is_corrupt_record(changes: dict[str, Any]) -> None:
    data = pack(record(**changes))
    with pytest.raises(CorruptRecord):
        job = decode_job(42, data)
        job.to_json()  # if it decodes, it must at least render


# ----------------------------------------------------------------- JSON form


def test_to_json_is_the_contract_object() -> None:
    assert FULL.to_json(position=None) == {
        "id": 42,
        "name": "nightly",
        "batch": "b-1",
        "custom_id": "req-7",
        "model": "llama3.2",
        "type": "chat",
        "priority": "high",
        "status": "failed",
        "position": None,
        "attempts": 3,
        "max_attempts": 4,
        "run_at": "2026-11-23T08:41:00.123Z",
        "after": [3, 5, 8],
        "host": "http://127.0.0.1:11434",
        "created_at": "2026-11-23T08:40:00.123Z",
        "started_at": "2026-11-23T08:41:01.623Z",
        "finished_at": "2026-11-23T08:41:30.373Z",
        "error": {"type": "backend_error", "message": "boom: ünïcode"},
        "cached": True,
        "cache": {"kind": "semantic", "source": 7, "similarity": 0.97},
        "category": "code",
        "feedback": {"score": 0.5, "reason": "fine", "category": "code"},
        "fallbacks": ["qwen2.5", "mistral:7b"],
        "route": {"rule": "best", "lower_bound": 0.6125, "rated": 12},
    }


def test_to_json_of_a_new_job_has_nulls_and_the_position() -> None:
    out = MINIMAL.to_json(position=3)
    assert list(out) == CONTRACT_KEYS
    assert out["position"] == 3
    assert out["after"] == [] and out["error"] is None and out["cached"] is False and out["fallbacks"] == []
    for key in ("run_at", "started_at", "finished_at", "name", "batch", "custom_id", "host", "category", "feedback",
                "route"):
        assert out[key] is None, key
    assert out["created_at"] == "2026-11-23T08:40:00.123Z"


@pytest.mark.parametrize("job", [FULL, MINIMAL], ids=["full", "minimal"])
def test_to_json_has_exactly_the_contract_keys_and_json_types(job: Job) -> None:
    out = job.to_json(position=None)
    assert list(out) == CONTRACT_KEYS
    # Internal fields (lease, cache_key, timeout...) never leak into the JSON form.
    assert not {"lease", "cache_key", "timeout", "keep_alive", "retry_at"} & set(out)
    assert json.loads(json.dumps(out)) == out  # plain JSON types only
    for key in ("run_at", "created_at", "started_at", "finished_at"):
        assert out[key] is None or RFC3339_Z.match(out[key]), (key, out[key])
    assert out["type"] in {t.value for t in JobType}
    assert out["priority"] in {p.value for p in Priority}
    assert out["status"] in {s.value for s in JobStatus}
    assert out["error"] is None or set(out["error"]) == {"type", "message"}


def test_enums_follow_the_contract() -> None:
    assert [p.value for p in sorted(Priority, key=lambda p: p.rank)] == \
        ["urgent", "high", "medium", "low"]
    assert {e.value for e in ErrorType} == {
        "model_not_found", "bad_request", "backend_error", "unreachable", "timeout",
        "cancelled", "dependency_failed", "abandoned", "invalid_response"}
    assert {s.value for s in JobStatus if s.finished} == {"completed", "failed", "cancelled"}
    assert len({s.code for s in JobStatus}) == len(JobStatus)  # index keys never collide
