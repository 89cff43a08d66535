"""The tables, their indexes, and the migrations that build them.

Migrations are numbered by their place in `MIGRATIONS` and recorded in the `migrations`
table. Every process brings the schema up to date when it opens the store: one
transaction under an advisory lock, so that two processes opening a new database
together apply each migration once, and a failed one leaves nothing behind. A database
whose schema is newer than this code knows is refused: an old `ollama-q` must not write
rows it does not understand.

What lives where (the LMDB store's tables, as columns and indexes):
- `jobs`: one row per job; the queue's fields are real columns. `state` splits pending
  into `ready` (may start now), `waiting` (held until `available_at`: a delay or a
  retry's backoff), `blocked` (a dependency has not completed) and `open_run` (retried
  while the run it was cancelled in goes on), like LMDB's ready, waiting, blocked and
  open_runs tables. Partial indexes give the claim order (priority rank, id)
  of ready jobs, the same per model, waiting jobs by time, and jobs by state or batch.
- `requests`, `results`: bodies apart from the job rows (msgpack, as on LMDB), so that
  listing never loads answers; deleted with their job.
- `dependencies`: (parent, child), who waits on whom; a parent may be cleaned away.
- `cache`: request digest -> result body.
- `daemons`: one row per daemon, with the key of the session advisory lock it holds
  while it lives, and a heartbeat written with the server's clock.
- `meta`: flags (paused; hooks_until, the time until which hook events are recorded).
- `hook_events`: finished jobs whose hook has not run (`hooks.py`).
- `stats`: the statistics' hour buckets, a row per bucket and shard, its sums in jsonb (stats.py).
- `partials`: what each running job's run has streamed so far (`result --follow`).
- `backend_states`, `run_progress`: what each living daemon reports of its backends and its
  running attempts, replaced at its heartbeat (`activity.py`).
- `counts`: counters (jobs per status, ready jobs per priority, per model and per block of
  ids, jobs finished per minute, cache figures) as
  sharded rows: each connection adds its deltas to its own shard at the end of a
  transaction, and a reader sums the shards. One row per counter would be a hot row
  that every state change locks until it commits: writers queue behind it, and two
  that lock two counters in different orders deadlock (the research reproduced both).
  Counting rows on partial indexes instead costs O(jobs), and a stats row refreshed now
  and then is stale right after a submit.

Times are seconds since the epoch (float8), as the job record has them, taken from the
server's clock: hosts' clocks differ."""

from __future__ import annotations

from typing import Any

from ollama_cli import __version__
from ollama_cli.errors import UsageError
from ollama_cli.store.postgres.connection import SCHEMA

# The first key of every advisory lock of ours; the second says which lock: 0 guards
# migrations, 2 the naming of batches, and a daemon's lock_key (from a sequence starting
# at 1000) is its liveness.
LOCK_SPACE = 0x6F71
MIGRATION_LOCK = 0
BATCH_LOCK = 2

_V1 = """
CREATE TABLE jobs (
    id            bigint PRIMARY KEY,
    state         text NOT NULL CHECK (state IN
                      ('ready', 'waiting', 'blocked', 'open_run', 'running', 'completed', 'failed', 'cancelled')),
    priority      smallint NOT NULL CHECK (priority BETWEEN 0 AND 3),  -- rank: 0 = urgent
    model         text NOT NULL,
    model_key     text NOT NULL,  -- the model's canonical name (jobs.full_name): what the scheduler asks by
    type          text NOT NULL,
    created_at    float8 NOT NULL,
    available_at  float8,  -- a waiting job starts then
    name          text,
    batch         text,
    custom_id     text,
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    run_at        float8,
    retry_at      float8,
    after         bigint[] NOT NULL DEFAULT '{}',
    host          text,
    started_at    float8,
    finished_at   float8,
    error_type    text,
    error_message text,
    cached        boolean NOT NULL DEFAULT false,
    timeout       float8,
    keep_alive    float8,
    cache_key     bytea,
    lease_owner   text,
    lease_token   text,
    CHECK ((state = 'waiting') = (available_at IS NOT NULL)),
    -- A running job holds its run's lease; so does a job cancelled while it ran, until the run
    -- closes, and, retried meanwhile, it is pending as `open_run` (not ready) until then.
    CHECK ((lease_token IS NULL) = (lease_owner IS NULL)),
    CHECK (state NOT IN ('running', 'open_run') OR lease_token IS NOT NULL),
    CHECK (state NOT IN ('ready', 'waiting', 'blocked') OR lease_token IS NULL)
);
-- The last job id and batch number given. A row, not a sequence: taken in the submitting
-- transaction, so one that rolls back (a refusal, a deadlock retried) gives nothing away,
-- and ids become visible in id order: whoever reads "jobs after id n" misses none. The row
-- is locked from the taking to the commit, which the submit does last but for its counters.
CREATE TABLE serials (
    name text PRIMARY KEY,
    last bigint NOT NULL
);
INSERT INTO serials VALUES ('job', 0), ('batch', 0);
CREATE INDEX jobs_ready ON jobs (priority, id) WHERE state = 'ready';
CREATE INDEX jobs_ready_by_model ON jobs (priority, model_key, id) WHERE state = 'ready';
CREATE INDEX jobs_waiting ON jobs (available_at, id) WHERE state = 'waiting';
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_lease_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_by_batch ON jobs (batch, id) WHERE batch IS NOT NULL;

CREATE TABLE requests (
    id   bigint PRIMARY KEY REFERENCES jobs ON DELETE CASCADE,
    body bytea NOT NULL
);
CREATE TABLE results (
    id   bigint PRIMARY KEY REFERENCES jobs ON DELETE CASCADE,
    body bytea NOT NULL
);
CREATE TABLE dependencies (
    parent bigint NOT NULL,
    child  bigint NOT NULL REFERENCES jobs ON DELETE CASCADE,
    PRIMARY KEY (parent, child)
);
CREATE INDEX dependencies_by_child ON dependencies (child);

CREATE TABLE cache (
    key  bytea PRIMARY KEY,
    body bytea NOT NULL
);

CREATE SEQUENCE daemon_lock_keys AS integer START 1000;
CREATE TABLE daemons (
    id             text PRIMARY KEY,
    lock_key       integer,  -- from the id; NULL for an id no lock of ours gave: never alive
    hostname       text NOT NULL,
    pid            integer NOT NULL,
    hosts          text[] NOT NULL,
    concurrency    integer NOT NULL,
    started_at     float8 NOT NULL,
    last_heartbeat float8 NOT NULL
);

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Updated in place all the time: room on each page keeps the updates HOT.
CREATE TABLE counts (
    name  text NOT NULL,
    shard smallint NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (name, shard)
) WITH (fillfactor = 50);
"""

# What living daemons report (activity.py); ready jobs counted per priority and model, so that
# `top` and metrics read queue depth per model from counters.
ACTIVITY = """
CREATE TABLE backend_states (
    daemon_id  text NOT NULL,
    position   integer NOT NULL,  -- the daemon's order of its backends
    url        text NOT NULL,
    up         boolean NOT NULL,
    installed  text[],  -- NULL: not known yet
    loaded     text[] NOT NULL,
    slots      integer NOT NULL,
    in_use     integer NOT NULL,
    updated_at float8 NOT NULL,
    PRIMARY KEY (daemon_id, position)
);
CREATE TABLE run_progress (
    daemon_id  text NOT NULL,
    job_id     bigint NOT NULL,
    tokens     bigint NOT NULL,
    started_at float8 NOT NULL,
    updated_at float8 NOT NULL,
    PRIMARY KEY (daemon_id, job_id)
);
-- Counted afresh: whatever such counters a store holds are replaced by what its jobs say.
DELETE FROM counts WHERE name LIKE 'ready_model/%';
INSERT INTO counts (name, shard, n)
    SELECT 'ready_model/' || priority || '/' || model_key, 0, count(*) FROM jobs WHERE state = 'ready'
    GROUP BY priority, model_key;
"""

# Categories and feedback on jobs; the statistics' hour buckets (stats.py), sharded as counts.
_STATS = """
ALTER TABLE jobs ADD COLUMN category text, ADD COLUMN feedback_score float8,
    ADD COLUMN feedback_reason text, ADD COLUMN feedback_category text;
CREATE TABLE stats (
    hour  integer NOT NULL,  -- hours since the epoch
    kind  text NOT NULL,     -- t: group is the job type; c: group is type:category
    model text NOT NULL,
    grp   text NOT NULL,
    shard smallint NOT NULL,
    f     jsonb NOT NULL,    -- field -> sum (store/buckets.py)
    PRIMARY KEY (hour, kind, model, grp, shard)
) WITH (fillfactor = 50);
"""

# Ready jobs are also counted per priority and block of 2^20, 2^15 and 2^10 ids, so that a
# position adds a few dozen counters and counts at most 1,023 index entries, however deep
# the job is (LMDB keeps 2^10 and 2^20 blocks: a range of counters there is one cursor,
# here a sum over shards, so a middle level keeps each range to 31 blocks). READY_BY_BLOCK:
# those counters as the jobs give them (how their migration fills them, what `doctor` checks).
# Counter names compare bytewise (COLLATE "C"): a range or a prefix (`count/%`) of them is
# then a seek on the primary key in a database of any collation, and `info`, which reads
# `count/` and `cache/`, never reads the block counters, however many there are.
BLOCKS = (20, 15, 10)
READY_BY_BLOCK = ("SELECT 'r' || b.bits || '/' || priority || '/' || lpad(to_hex(id >> b.bits), 16, '0'), "
                  f"count(*) FROM jobs, (VALUES {', '.join(f'({b})' for b in BLOCKS)}) AS b(bits) "
                  "WHERE state = 'ready' GROUP BY 1")
BLOCK_COUNTS = f"""
ALTER TABLE counts ALTER COLUMN name TYPE text COLLATE "C";
INSERT INTO counts (name, shard, n) SELECT name, 0, n FROM ({READY_BY_BLOCK}) AS r(name, n)
ON CONFLICT (name, shard) DO UPDATE SET n = counts.n + EXCLUDED.n;
"""

# The cache complete: what `cache list` shows, TTL and size bound (by indexes: eviction and
# expiry never scan), the semantic cache's scope and vector per entry; jobs say how the cache
# answered them. Entries stored before count as created now.
RESULT_CACHE = """
ALTER TABLE cache
    ADD COLUMN model       text NOT NULL DEFAULT '',
    ADD COLUMN model_key   text NOT NULL DEFAULT '',
    ADD COLUMN type        text NOT NULL DEFAULT '',
    ADD COLUMN created_at  float8 NOT NULL DEFAULT extract(epoch FROM now()),
    ADD COLUMN last_hit_at float8 NOT NULL DEFAULT extract(epoch FROM now()),
    ADD COLUMN hits        bigint NOT NULL DEFAULT 0,
    ADD COLUMN source      bigint,
    ADD COLUMN expires_at  float8,
    ADD COLUMN scope       bytea,
    ADD COLUMN vector      bytea,
    ADD COLUMN bytes       bigint;
UPDATE cache SET bytes = length(body);
ALTER TABLE cache ALTER COLUMN bytes SET NOT NULL;
CREATE INDEX cache_by_last_hit ON cache (last_hit_at, key);
CREATE INDEX cache_by_created ON cache (created_at, key);
CREATE INDEX cache_by_model ON cache (model_key, created_at);
CREATE INDEX cache_by_expiry ON cache (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX cache_by_scope ON cache (scope) WHERE scope IS NOT NULL;
ALTER TABLE jobs
    ADD COLUMN semantic         boolean NOT NULL DEFAULT false,
    ADD COLUMN cache_kind       text,
    ADD COLUMN cache_source     bigint,
    ADD COLUMN cache_similarity float8;
"""

# Hook events (`hooks.py`): finished jobs whose `--on-finish` hook has not run. A trigger
# records them, so that every statement that finishes a job (now and in any later module)
# does, at no round trip: a row that becomes completed, failed or cancelled while `meta`
# `hooks_until` is after its `finished_at` (the `now` of the transaction that finished it)
# gets an event holding the row as it finished (`job`). `owner` is the daemon that holds the
# event, `owner_key` its liveness lock: NULL while no daemon holds it.
_HOOKS = """
CREATE TABLE hook_events (
    id        bigserial PRIMARY KEY,
    job       jsonb NOT NULL,
    owner     text,
    owner_key integer
);
CREATE FUNCTION record_hook_event() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM meta WHERE key = 'hooks_until' AND value::float8 > NEW.finished_at) THEN
        INSERT INTO hook_events (job) VALUES (to_jsonb(NEW));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER job_inserted_finished AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.state IN ('completed', 'failed', 'cancelled')) EXECUTE FUNCTION record_hook_event();
CREATE TRIGGER job_finished AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (NEW.state IN ('completed', 'failed', 'cancelled') AND OLD.state NOT IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION record_hook_event();
"""

# What running jobs have streamed so far (`partials.py`), deleted as each stops running.
_PARTIALS = """
CREATE TABLE partials (
    id      bigint PRIMARY KEY REFERENCES jobs ON DELETE CASCADE,
    token   text NOT NULL,  -- the lease token of the run that wrote it
    attempt integer NOT NULL,
    chars   integer NOT NULL,  -- characters of text in body
    body    bytea NOT NULL  -- UTF-8
);
"""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("jobs, bodies, dependencies, cache, daemons, meta, serials, sharded counts", _V1),
    ("job categories and feedback; statistics in hour buckets", _STATS),
    ("jobs: the fallback models left (submit --fallback), how submit auto chose the model",
     "ALTER TABLE jobs ADD COLUMN fallbacks text[] NOT NULL DEFAULT '{}', ADD COLUMN route bytea"),
    # Before the two below: their tests write with this version's code into a store migrated
    # up to just before them, so every column of the job row must exist by then.
    ("the cache's entries: list, TTL, bound, semantic vectors; jobs' cache hits", RESULT_CACHE),
    ("ready jobs counted per block of ids, for positions at any depth", BLOCK_COUNTS),
    ("backend states, run progress, ready counters per model", ACTIVITY),
    ("hook events", _HOOKS),
    ("partial output of running jobs", _PARTIALS),
)
LATEST = len(MIGRATIONS)


def _newer(found: int, where: str) -> UsageError:
    return UsageError(f"the store at {where} has schema version {found}, newer than this ollama-q "
                      f"({__version__}) knows ({LATEST}): upgrade ollama-q on this host")


def version(conn: Any) -> int:
    """The schema version of the database (0: none yet). Leaves no transaction open."""
    import psycopg2.errors

    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.migrations")
            found = int(cur.fetchone()[0])
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName):
        found = 0
    conn.rollback()
    return found


def migrate(conn: Any, where: str) -> int:
    """Bring the schema up to `LATEST`; its version. `where` names the store in errors
    (a URL without its password). Costs one query when the schema is up to date."""
    found = version(conn)
    if found == LATEST:
        return found
    if found > LATEST:
        raise _newer(found, where)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, MIGRATION_LOCK))
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cur.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.migrations ("
                        "version integer PRIMARY KEY, name text NOT NULL, "
                        "applied_at timestamptz NOT NULL DEFAULT now())")
            cur.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.migrations")
            found = int(cur.fetchone()[0])  # another process may have migrated meanwhile
            if found > LATEST:
                raise _newer(found, where)
            for number in range(found + 1, LATEST + 1):
                name, sql = MIGRATIONS[number - 1]
                cur.execute(f"SET LOCAL search_path = {SCHEMA}")
                cur.execute(sql)
                cur.execute(f"INSERT INTO {SCHEMA}.migrations (version, name) VALUES (%s, %s)", (number, name))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return LATEST
