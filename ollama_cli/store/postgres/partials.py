"""The partial output of running jobs on PostgreSQL (`Engine.write_partials`,
`partial_output`): a row per running job that has streamed text, with its run's lease
token and attempt. Written only by the run that holds the job's lease; deleted by the
engine in the transaction in which the job stops running (`forget`: the settles of
`claims.py`, a cancel in `changes.py`, a reclaim)."""

from __future__ import annotations

from collections.abc import Sequence

from ollama_cli.store.postgres.transactions import Tx
from ollama_cli.store.records import PartialText

# The body is UTF-8 bytes, not text: an answer may hold a NUL, which a text column refuses.
# `chars` is its length in characters, the unit of a piece's `start`.
_APPEND = (
    "UPDATE partials p SET body = p.body || %(body)s, chars = p.chars + %(n)s FROM jobs j "
    "WHERE p.id = %(id)s AND j.id = p.id AND j.state = 'running' AND j.lease_token = %(token)s "
    "AND p.token = %(token)s AND p.chars = %(start)s")
_REPLACE = (
    "INSERT INTO partials (id, token, attempt, chars, body) SELECT %(id)s, %(token)s, %(attempt)s, %(n)s, %(body)s "
    "FROM jobs WHERE id = %(id)s AND state = 'running' AND lease_token = %(token)s "
    "ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token, attempt = EXCLUDED.attempt, chars = EXCLUDED.chars, "
    "body = EXCLUDED.body")


def write(tx: Tx, parts: Sequence[PartialText]) -> None:
    for part in parts:
        values = {"id": part.job_id, "token": part.token, "attempt": part.attempt, "start": part.start,
                  "n": len(part.text), "body": part.text.encode("utf-8", "surrogatepass")}
        if part.start == 0:
            tx.cur.execute(_REPLACE, values)
        else:  # only after what this run stored: a piece whose start is elsewhere is ignored
            tx.cur.execute(_APPEND, values)


def read(tx: Tx, job_id: int) -> PartialText | None:
    found = tx.one("SELECT p.token, p.attempt, p.body FROM partials p JOIN jobs j USING (id) "
                   "WHERE p.id = %s AND j.state = 'running' AND j.lease_token = p.token", (job_id,))
    if found is None:
        return None
    token, attempt, body = found
    return PartialText(job_id, token, attempt, 0, bytes(body).decode("utf-8", "replace"))


def forget(tx: Tx, ids: Sequence[int]) -> None:
    """These jobs stop running: what their runs streamed goes, in the same transaction. One
    statement for all the jobs a settle ends, not a round trip per job; called wherever a
    running job stops (a settle, a cancel, a reclaim)."""
    if ids:
        tx.cur.execute("DELETE FROM partials WHERE id = ANY(%s)", (list(ids),))


def check(tx: Tx) -> list[str]:
    return [f"job {job_id}: partial output kept, but no run of it that wrote it is going on"
            for (job_id,) in tx.all("SELECT p.id FROM partials p LEFT JOIN jobs j USING (id) "
                                    "WHERE j.id IS NULL OR j.state <> 'running' "
                                    "OR j.lease_token IS DISTINCT FROM p.token")]
