"""The named tables of the store and what each holds. A feature that keeps records adds its
table here (and LMDB's MAX_DBS leaves room for it)."""

DATABASES = (
    "jobs",  # id -> job record
    "requests",  # id -> request payload (prompt, messages, input, options...)
    "results",  # id -> result body, apart so that listing never loads answers
    "ready",  # priority rank + id -> b"" : pending jobs that may start now
    "waiting",  # time + id -> priority rank : pending jobs held until a time (delay, retry backoff)
    "blocked",  # id -> b"" : pending jobs whose dependencies have not all completed
    "open_runs",  # id -> b"" : jobs no longer running whose last run has not closed yet
    "dependents",  # dependency id + job id -> b"" : who waits on whom
    "status",  # status code + id -> b"" : jobs by status
    "meta",  # counters and flags
    "cache",  # request digest -> result body
    "cache_entries",  # request digest -> what `cache list` shows of the entry (cache/__init__.py)
    "cache_index",  # kind + time (ms) + digest -> b"" : by last hit (eviction), creation, expiry
    "cache_vectors",  # scope digest + 0 + block number -> keys and vectors; + 1 + key -> one vector (cache/semantic.py)
    "daemons",  # daemon id -> daemon record
    "batches",  # batch name + id -> b""
    "ready_model",  # priority rank + model digest + id -> type code : `ready` by model
    "ready_models",  # model digest -> canonical model name
    "stats",  # hour + kind + model digest + group -> {"m": model, "g": group, "f": sums} (store/buckets.py)
    "backend_states",  # daemon id -> what it knows of its backends (queue/activity.py)
    "run_progress",  # daemon id -> how far its running attempts have streamed
    "hook_events",  # event id -> {job record as it finished, owner}: hooks to run (queue/hooks.py)
    "partials",  # id -> {token, attempt, text}: what a running job's run has streamed so far
)
