"""queue/doctor.py notices each way the indexes and counters can disagree with the job records:
a checker that misses a kind of drift would let the fault tests pass over it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ollama_cli import queue
from ollama_cli.codec import encode_job
from ollama_cli.jobs import ErrorType, JobError, JobStatus, Lease, Priority
from ollama_cli.queue import doctor
from ollama_cli.queue.indexes import block_count_names, model_count_name, model_digest
from ollama_cli.store.keys import u64
from ollama_cli.store.lmdb import Store, Tx
from tests.helpers.jobs import make_spec

T = 1_000_000.0
PENDING, COMPLETED = JobStatus.PENDING, JobStatus.COMPLETED
MEDIUM, URGENT = Priority.MEDIUM.rank, Priority.URGENT.rank


@pytest.fixture
def sound(kv: Store) -> Store:
    """Nine jobs, one of each place a job can be:
    1 ready, 2 running, 3 waiting, 4 blocked on 2, 5 completed in batch "b", 6 failed,
    7 ready once its dependency 5 completed, 8 cancelled while it ran and retried (its run
    still open), 9 cancelled while it ran (its run still open)."""
    def build(tx: Tx) -> None:
        for s in (make_spec("1"), make_spec("2"), make_spec("3", run_at=T + 100), make_spec("4", after=(2,)),
                  make_spec("5", batch="b"), make_spec("6")):
            queue.submit(tx, s, T)
        two, five, six = (queue.get_job(tx, i) for i in (2, 5, 6))
        claims = {c.job.id: c.job for c in queue.claim(tx, [two, five, six], "d", T)}
        queue.complete(tx, 5, claims[5].lease.token, {"response": "x"}, T)
        queue.fail_attempt(tx, 6, claims[6].lease.token, JobError(ErrorType.BAD_REQUEST, "no"), T,
                           retry_after=None)
        queue.submit(tx, make_spec("7", after=(5,)), T)
        for job in queue.submit_many(tx, [make_spec("8"), make_spec("9")], T):
            queue.claim(tx, [job], "d", T)
            queue.cancel(tx, job.id, T)
        queue.retry(tx, 8, T)

    kv.write(build)
    with kv.read() as tx:
        assert doctor.check(tx) == []
        assert [queue.get_job(tx, i).status.value for i in range(1, 10)] == [
            "pending", "running", "pending", "pending", "completed", "failed", "pending", "pending", "cancelled"]
        assert [queue.get_job(tx, i).lease is not None for i in (8, 9)] == [True, True]
    return kv


def _rewrite(job_id: int, **changes: object) -> Callable[[Tx], None]:
    def apply(tx: Tx) -> None:
        job = queue.get_job(tx, job_id)
        tx.put("jobs", u64(job_id), encode_job(job.evolve(**changes)))
    return apply


def _move_ready_to_blocked(tx: Tx) -> None:
    tx.delete("ready", bytes([MEDIUM]) + u64(7))
    tx.add(f"ready/{MEDIUM}", -1)
    tx.put("blocked", u64(7))


def _waiting_key(tx: Tx) -> bytes:
    return next(k for k, _ in tx.scan("waiting"))


DRIFTS: dict[str, tuple[Callable[[Tx], object], str]] = {
    "status counter off": (lambda tx: tx.add("count/pending", 1), "counter count/pending is 6, the status index holds 5"),
    "ready counter off": (lambda tx: tx.add(f"ready/{MEDIUM}", 1), f"counter ready/{MEDIUM} is 3"),
    "status entry missing": (lambda tx: tx.delete("status", PENDING.code + u64(1)),
                             "job 1: pending, but the status index says nothing"),
    "status entry of another status": (lambda tx: tx.put("status", COMPLETED.code + u64(1)),
                                       "job 1: pending, but the status index says pending, completed"),
    "status entry of an unknown status": (lambda tx: tx.put("status", bytes([9]) + u64(1)),
                                          "status index: entry of job 1 under unknown code 9"),
    "status entry of no job": (lambda tx: (tx.put("status", PENDING.code + u64(99)), tx.add("count/pending", 1)),
                               "the counters add up to 10 jobs, the store holds 9"),
    "ready and waiting": (lambda tx: tx.put("waiting", u64(int(T * 1000)) + u64(1), bytes([MEDIUM])),
                          "job 1: pending, in more than one place: ready, waiting"),
    "pending in no index": (lambda tx: (tx.delete("ready", bytes([MEDIUM]) + u64(1)), tx.add(f"ready/{MEDIUM}", -1)),
                            "job 1: pending, but in none of ready, waiting, blocked, open runs"),
    "ready under the wrong rank": (lambda tx: (tx.delete("ready", bytes([MEDIUM]) + u64(1)),
                                               tx.put("ready", bytes([URGENT]) + u64(1)),
                                               tx.add(f"ready/{MEDIUM}", -1), tx.add(f"ready/{URGENT}", 1)),
                                   "job 1: ready under rank 0, its priority is medium"),
    "running job still ready": (lambda tx: (tx.put("ready", bytes([MEDIUM]) + u64(2)), tx.add(f"ready/{MEDIUM}", 1)),
                                "job 2: running, but in the ready index"),
    "ready before its dependency": (lambda tx: (tx.delete("blocked", u64(4)), tx.put("ready", bytes([MEDIUM]) + u64(4)),
                                                tx.add(f"ready/{MEDIUM}", 1)),
                                    "job 4: ready, but its dependency 2 is running"),
    "blocked with nothing to wait for": (_move_ready_to_blocked,
                                         "job 7: blocked, but none of its dependencies is unfinished"),
    "waiting until the wrong time": (lambda tx: (tx.delete("waiting", k := _waiting_key(tx)),
                                                 tx.put("waiting", u64(5) + k[8:], bytes([MEDIUM]))),
                                     "job 3: waiting until 5 ms"),
    "waiting under the wrong rank": (lambda tx: tx.put("waiting", _waiting_key(tx), bytes([URGENT])),
                                     "job 3: its waiting entry holds rank"),
    "index entry of no job": (lambda tx: (tx.put("ready", bytes([MEDIUM]) + u64(99)), tx.add(f"ready/{MEDIUM}", 1)),
                              "ready index: job 99 does not exist"),
    "dependents entry missing": (lambda tx: tx.delete("dependents", u64(2) + u64(4)),
                                 "job 4: depends on 2, but the dependents index does not say so"),
    "dependents entry extra": (lambda tx: tx.put("dependents", u64(1) + u64(6)),
                               "dependents index: job 6 on 1, which its record does not say"),
    "batch entry missing": (lambda tx: tx.delete("batches", b"b\x00" + u64(5)),
                            "job 5: in batch 'b', but not in the batches index"),
    "batch entry extra": (lambda tx: tx.put("batches", b"c\x00" + u64(1)),
                          "batches index: job 1 in batch 'c', which its record does not say"),
    "pending with a lease": (_rewrite(1, lease=Lease("d", "t")),
                             "job 1: pending with the lease of a run, but not in the open runs index"),
    "completed with a lease": (_rewrite(5, lease=Lease("d", "t")), "job 5: completed with a lease"),
    "open run not indexed": (lambda tx: tx.delete("open_runs", u64(9)),
                             "job 9: cancelled with the lease of a run, but not in the open runs index"),
    "open runs entry of a job without a run": (lambda tx: tx.put("open_runs", u64(6)),
                                               "job 6: in the open runs index, but failed without a lease"),
    "open runs entry of a running job": (lambda tx: tx.put("open_runs", u64(2)),
                                         "job 2: in the open runs index, but running with a lease"),
    "open runs entry of no job": (lambda tx: tx.put("open_runs", u64(99)), "open runs index: job 99 does not exist"),
    "open run also ready": (lambda tx: (tx.put("ready", bytes([MEDIUM]) + u64(8)), tx.add(f"ready/{MEDIUM}", 1)),
                            "job 8: pending, in more than one place: ready, open runs"),
    "running without a lease": (_rewrite(2, lease=None), "job 2: running without a lease"),
    "finished without a finish time": (_rewrite(6, finished_at=None), "job 6: failed without a finish time"),
    "pending with a finish time": (_rewrite(1, finished_at=T), "job 1: pending with a finish time"),
    "completed without a result": (lambda tx: tx.delete("results", u64(5)), "job 5: completed without a result"),
    "result of a job not completed": (lambda tx: tx.put("results", u64(1), b"\x80"),
                                      "job 1: pending, but a result is stored"),
    "result of no job": (lambda tx: tx.put("results", u64(99), b"\x80"), "result of job 99, which does not exist"),
    "request of no job": (lambda tx: tx.put("requests", u64(99), b"\x80"), "request of job 99, which does not exist"),
    "job without its request": (lambda tx: tx.delete("requests", u64(1)), "job 1: no request stored"),
    "corrupt record": (lambda tx: tx.put("jobs", u64(1), b"\xc1"), "job 1: record 1 is corrupt"),
    "record under another id": (lambda tx: tx.put("jobs", u64(1), tx.get("jobs", u64(7))),
                                "job 1: its record says it is job 7"),
    "id counter behind": (lambda tx: tx.add("next_id", -3), "counter next_id is 6, below job 9"),
    "per-model entry missing": (lambda tx: tx.delete("ready_model", bytes([MEDIUM]) + model_digest("m") + u64(1)),
                                "job 1: ready, but not in the per-model index"),
    "per-model entry extra": (lambda tx: tx.put("ready_model", bytes([MEDIUM]) + model_digest("m") + u64(3)),
                              "per-model index: job 3 is not ready under that model and priority"),
    "per-model entry of another type": (lambda tx: tx.put("ready_model", bytes([MEDIUM]) + model_digest("m") + u64(1),
                                                          b"e"), "per-model index: job 1 holds type"),
    "model count off": (lambda tx: tx.add(model_count_name(MEDIUM, model_digest("m")), 1),
                        f"counter rm/{MEDIUM}/{model_digest('m').hex()} is 3, the ready index holds 2"),
    "block count off": (lambda tx: tx.add(block_count_names(MEDIUM, 1)[0], -1), f"counter rb/{MEDIUM}/"),
    "model name missing": (lambda tx: tx.delete("ready_models", model_digest("m")),
                           "job 1: its model 'm' is not in ready_models"),
}


@pytest.mark.parametrize("kind", DRIFTS)
def test_the_doctor_notices_each_kind_of_drift(sound: Store, kind: str) -> None:
    drift, expected = DRIFTS[kind]
    sound.write(drift)
    with sound.read() as tx:
        problems = doctor.check(tx)
    assert any(expected in p for p in problems), problems
