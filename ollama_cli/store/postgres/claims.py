"""The daemon's step: settle finished runs (fenced by their lease token), promote due held
jobs, plan over the head of the ready index and claim with one conditional UPDATE; and the
reclaim of the jobs of daemons that died."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ollama_cli.codec import pack, unpack
from ollama_cli.errors import CorruptRecord
from ollama_cli.jobs import ErrorType, Job, JobError, full_name, result_stats
from ollama_cli.store.postgres import activity, changes, fallbacks, liveness, partials, result_cache
from ollama_cli.store.postgres.ready import ReadyView
from ollama_cli.store.postgres.rows import COLUMNS, to_job
from ollama_cli.store.postgres.states import (COMPLETED, COUNT, FAILED, PENDING, RUNNING, add_ready, finished,
                                              load, save)
from ollama_cli.store.postgres.transactions import Tx
from ollama_cli.store.records import Claim, Placement, Planner, Settle, SettleKind, Tick

LOOKAHEAD = 256  # ready jobs a planner is shown at most: bounds a tick however long the queue
CLAIM_TRIES = 3  # plans per claim, at most, when other daemons take planned jobs first
PROMOTE_BATCH = 1000  # due held jobs made ready per claim, at most: bounds a tick


def settle_and_claim(tx: Tx, settles: Sequence[Settle], now: float, *, owner: str, planner: Planner | None,
                     lookahead: int | None) -> Tick:
    limit = LOOKAHEAD if lookahead is None else min(lookahead, LOOKAHEAD)
    settled = _settle(tx, settles, now)
    if planner is None:
        return Tick(settled, [], None)
    paused = changes.is_paused(tx)
    if not paused:
        _promote_due(tx, now)
    # Daemons read the same head of the queue: one that finds jobs it planned taken by
    # another meanwhile plans again without them, rather than start nothing this tick.
    taken_by_others: list[int] = []
    for attempt in range(CLAIM_TRIES):
        plan = planner(ReadyView(tx, limit, paused, taken_by_others), lambda job: _request(tx, job.id))
        last = attempt == CLAIM_TRIES - 1
        if not last:
            tx.cur.execute("SAVEPOINT claim")
            before = dict(tx.deltas), tx.notify
        claimed, missed = _claim(tx, plan.placements, owner, now)
        if not missed or last:
            return Tick(settled, claimed, plan.state)
        tx.cur.execute("ROLLBACK TO SAVEPOINT claim")
        tx.deltas, tx.notify = before
        taken_by_others += missed
    raise AssertionError("unreachable")


def _request(tx: Tx, job_id: int) -> dict[str, Any]:
    found = tx.one("SELECT body FROM requests WHERE id = %s", (job_id,))
    return {} if found is None else unpack(job_id, found[0])


def _promote_due(tx: Tx, now: float) -> None:
    """Held jobs whose time has come become ready (a held job's dependencies have all
    completed: it was blocked until then)."""
    promoted = tx.all(
        "UPDATE jobs SET state = 'ready', available_at = NULL WHERE id IN (SELECT id FROM jobs "
        "WHERE state = 'waiting' AND available_at <= %s ORDER BY available_at, id LIMIT %s "
        "FOR UPDATE SKIP LOCKED) RETURNING priority, model_key, id", (now, PROMOTE_BATCH))
    for rank, model_key, job_id in promoted:
        add_ready(tx, rank, model_key, job_id, 1)


def _claim(tx: Tx, placements: Sequence[Placement], owner: str,
           now: float) -> tuple[list[tuple[Placement, list[Claim]]], list[int]]:
    """Claim the jobs of every placement in one statement: per placement the claims, and
    the ids of jobs that could not be claimed (another daemon took them, or they were
    cancelled, since the read)."""
    import secrets  # hmac and OpenSSL with it: a cost that a submit need not pay

    ids = [j.id for p in placements for j in p.jobs]
    if not ids:
        return [(p, []) for p in placements], []
    hosts = [p.host for p in placements for _ in p.jobs]
    tokens = [secrets.token_hex(8) for _ in ids]
    taken = tx.all(
        f"UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, started_at = %(now)s, "
        f"retry_at = NULL, host = t.host, lease_owner = %(owner)s, lease_token = t.token "
        f"FROM unnest(%(ids)s::bigint[], %(tokens)s::text[], %(hosts)s::text[]) AS t(id, token, host) "
        f"WHERE j.id = t.id AND j.id IN (SELECT id FROM jobs WHERE id = ANY(%(ids)s) AND state = 'ready' "
        f"ORDER BY id FOR UPDATE SKIP LOCKED) "
        f"RETURNING {', '.join('j.' + c for c in COLUMNS.split(', '))}",
        {"now": now, "owner": owner, "ids": ids, "tokens": tokens, "hosts": hosts})
    started = {r[0]: to_job(r) for r in taken}
    for job in started.values():
        add_ready(tx, job.priority.rank, full_name(job.model), job.id, -1)
        tx.add(COUNT[PENDING], -1)
        tx.add(COUNT[RUNNING], 1)
    bodies = dict(tx.all("SELECT id, body FROM requests WHERE id = ANY(%s)", (list(started),)))
    out = []
    for placement in placements:
        claims = []
        for planned in placement.jobs:  # in the planner's order
            job = started.get(planned.id)
            if job is None:
                continue
            try:
                request = unpack(job.id, bodies[job.id]) if job.id in bodies else {}
            except CorruptRecord as exc:
                save(tx, (job, "running"), finished(job, FAILED, now, ErrorType.INVALID_RESPONSE,
                                                    f"the stored request is corrupt: {exc.reason}"), now)
                continue
            claims.append(Claim(job, request))
        out.append((placement, claims))
    return out, [i for i in ids if i not in started]


def _settle(tx: Tx, settles: Sequence[Settle], now: float) -> list[Job | None]:
    """Record each settle whose lease still holds (None for the others: cancelled,
    reclaimed or settled meanwhile), with a statement per kind of change, not per job.
    The settle of a run a cancelled job kept open closes that run, and records nothing."""
    if not settles:
        return []
    leased = {r[0]: (to_job(r), r[1]) for r in tx.all(
        f"SELECT {COLUMNS} FROM jobs WHERE id = ANY(%s) AND lease_token IS NOT NULL ORDER BY id FOR UPDATE",
        (sorted({s.job_id for s in settles}),))}
    held = []
    for s in settles:
        job, state = leased.get(s.job_id, (None, ""))
        if job is None or job.lease is None or job.lease.token != s.token:
            continue
        del leased[s.job_id]  # a second settle of it finds no lease
        if job.status is RUNNING:
            held.append((s, job))
        else:
            save(tx, (job, state), job.evolve(lease=None), now)
    partials.forget(tx, [job.id for _, job in held])
    completed = [(job.id, pack(s.result or {})) for s, job in held if s.kind is SettleKind.COMPLETE]
    if completed:
        ids, bodies = zip(*completed)
        tx.cur.execute("INSERT INTO results (id, body) SELECT * FROM unnest(%s::bigint[], %s::bytea[]) "
                       "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body", (list(ids), list(bodies)))
    parents = {r[0] for r in tx.all("SELECT DISTINCT parent FROM dependencies WHERE parent = ANY(%s)",
                                    ([job.id for _, job in held],))}
    out: dict[int, Job] = {}
    for s, job in held:
        host = s.host or job.host
        if s.kind is SettleKind.COMPLETE:
            hit = None
            if s.reuse is not None:  # answered from the semantic cache: that entry's hit, nothing stored
                result_cache.hit(tx, s.reuse.key, now, semantic=True)
                hit = ("semantic", s.reuse.source, s.reuse.similarity)
            elif job.cache_key is not None:
                result_cache.store(tx, job.cache_key, s.result or {}, model=job.model, job_type=job.type.value,
                                   source=job.id, now=now, policy=s.cache)
            new = job.evolve(status=COMPLETED, finished_at=now, lease=None, error=None, host=host,
                             cached=hit is not None, cache_hit=hit)
        elif s.kind is SettleKind.FAIL:
            error = s.error or JobError(ErrorType.BACKEND_ERROR, "failed")
            if s.retry_after is not None and job.attempts < job.max_attempts:
                new = job.evolve(status=PENDING, lease=None, error=error, host=host, retry_at=now + s.retry_after)
            else:
                new = finished(job.evolve(host=host), FAILED, now, error.type, error.message)
        elif s.kind is SettleKind.FALLBACK:
            error = s.error or JobError(ErrorType.BACKEND_ERROR, "failed")
            new = fallbacks.next_model_or_failed(tx, job.evolve(host=host), error, now)
        else:
            new = job.evolve(status=PENDING, lease=None, attempts=max(0, job.attempts - 1))
        figures = result_stats(s.result or {}) if s.kind is SettleKind.COMPLETE else None
        out[id(s)] = save(tx, (job, "running"), new, now, hand_on=job.id in parents, stats=figures)
    return [out.get(id(s)) for s in settles]


def reclaim(tx: Tx, now: float, alive: set[int]) -> list[Job]:
    """The jobs of daemons whose lock key is not in `alive` go back to the queue (or, out of
    attempts, to their next fallback model, or fail); their daemon rows, and what they reported
    (`activity`), go."""
    owners = {r[0] for r in tx.all("SELECT DISTINCT lease_owner FROM jobs WHERE lease_owner IS NOT NULL")}
    dead = sorted(o for o in owners if liveness.lock_key(o) not in alive)
    gone = tx.all("DELETE FROM daemons WHERE lock_key IS NULL OR NOT (lock_key = ANY(%s)) RETURNING id",
                  (sorted(alive),))
    if gone:
        activity.forget(tx, [r[0] for r in gone])
    if not dead:
        return []
    out = []
    for job, state in load(tx, [r[0] for r in tx.all(
            "SELECT id FROM jobs WHERE lease_owner = ANY(%s)", (dead,))], lock=True).values():
        if job.lease is None or job.lease.owner not in dead:
            continue  # settled between the two reads
        if job.status is not RUNNING:  # a run a cancelled job kept open: it closes
            save(tx, (job, state), job.evolve(lease=None), now)
            continue
        if job.attempts >= job.max_attempts:
            new = fallbacks.next_model_or_failed(tx, job, JobError(
                ErrorType.ABANDONED, f"its daemon died during each of {job.attempts} attempts"), now)
        else:
            new = job.evolve(status=PENDING, lease=None, error=JobError(ErrorType.ABANDONED, "its daemon died"))
        partials.forget(tx, [job.id])
        out.append(save(tx, (job, state), new, now))
    return out
