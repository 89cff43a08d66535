"""Queue semantics over the LMDB engine's key-value transactions (`store.base.Tx`): how a
job moves from submit to a result, and what is kept beside it so that every question is
cheap at any queue length.

The rooms: `transitions.py` (every change of a job's state), `indexes.py` (the records, their
keys and counters, and `transition`, the only writer of a job record, with the invariants it
keeps), `reads.py` (questions, no writes), `retention.py` (clean), `doctor.py` (every invariant
re-derived from the records), `faults.py` (one job's fault never stops an operation). Nothing
here does I/O but through the transaction."""

from ollama_cli.queue.indexes import get_job, migrate, needs_migration
from ollama_cli.queue.reads import (
    batch_counts, batch_exists, batch_jobs, batch_names, counts, get_request, get_result, ids_with_status,
    is_paused, list_jobs, open_runs, positions, running,
)
from ollama_cli.queue.retention import clean
from ollama_cli.queue.transitions import (
    cancel, claim, complete, fail_attempt, promote_due, quarantine, ready_candidates, reclaim, release, retry,
    set_paused, settle, submit, submit_batch, submit_many,
)

__all__ = [
    "batch_counts", "batch_exists", "batch_jobs", "batch_names", "cancel", "claim", "clean", "complete",
    "counts", "fail_attempt", "get_job", "get_request", "get_result", "ids_with_status", "is_paused", "list_jobs",
    "migrate", "needs_migration", "open_runs", "positions", "promote_due", "quarantine", "ready_candidates",
    "reclaim", "release", "retry", "running", "set_paused", "settle", "submit", "submit_batch", "submit_many",
]
