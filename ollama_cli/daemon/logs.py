"""The daemon's log: one subscriber of its events, writing a line for each, and the log's
set-up (stderr, plain text with a level mark, or JSON lines whose fields name the event and
what it is about)."""

from __future__ import annotations

import logging
from typing import Any

from ollama_cli.daemon import events
from ollama_cli.jobs import Job, JobStatus

log = logging.getLogger("ollama_q.daemon")
INFO, WARNING = logging.INFO, logging.WARNING


def _line(level: int, event: str, message: str, *args: Any, **fields: Any) -> None:
    """One record: `event` (a name in snake case) and `fields` go to the JSON lines only."""
    log.log(level, message, *args, extra={"event": event, "fields": {k: v for k, v in fields.items() if v is not None}})


def _found(found: events.BackendFound) -> str:
    if not found.up:
        return f"{found.backend} (not answering)"
    return found.backend if found.models is None else f"{found.backend} ({found.models} models)"


def _routed(job: Job) -> str:
    """How `submit auto` chose the model of a job, said when it first starts."""
    if not job.route or job.attempts != 1:
        return ""
    rule, bound, rated = job.route
    if rule == "best":
        return f"; chosen by routing: lower bound {bound:.2f} of {rated} rated jobs"
    return f"; chosen by routing: {rule}"


def write(event: events.Event) -> None:
    """One line for the event, at the level its news deserves."""
    match event:
        case events.DaemonStarted(daemon_id, backends, concurrency, found):
            where = ", ".join(map(_found, found)) if found else ", ".join(backends)
            down = found and not any(f.up for f in found)
            _line(WARNING if down else INFO, "daemon_started", "daemon %s started: %s, concurrency %d per backend%s",
                  daemon_id, where, concurrency, "; no backend answers yet: jobs wait as pending" if down else "",
                  daemon=daemon_id, hosts=list(backends), up=[f.backend for f in found if f.up])
        case events.DaemonStopping(signal, now=True):
            _line(WARNING, "daemon_stopping", "second %s: stopping now, handing running jobs back", signal,
                  signal=signal)
        case events.DaemonStopping(signal, grace=grace, running=running):
            _line(INFO, "daemon_stopping", "%s: taking no more jobs; waiting up to %gs for %d running", signal, grace,
                  running, signal=signal, grace_s=grace, running=running)
        case events.DaemonFenced(after, stopped):
            _line(WARNING, "daemon_fenced", "the store has not confirmed this daemon alive for %gs: stopped %d running "
                  "requests (other daemons may take their jobs back); claiming nothing until it answers", after,
                  stopped, fence_s=after, stopped=stopped)
        case events.DaemonUnfenced():
            _line(INFO, "daemon_unfenced", "the store answers again: claiming jobs again")
        case events.DaemonDrained():
            _line(INFO, "daemon_drained", "nothing pending or running: exiting (--drain)")
        case events.JobStarted(jobs, backend):
            first = jobs[0]
            _line(INFO, "job_started", "job %s started on %s (%s, attempt %d of %d%s)", ", ".join(str(j.id) for j in jobs),
                  backend, first.model, first.attempts, first.max_attempts, _routed(first), job=first.id,
                  jobs=[j.id for j in jobs] if len(jobs) > 1 else None, attempt=first.attempts, host=backend,
                  model=first.model, route=first.route[0] if first.route else None)
        case events.JobFinished(job, JobStatus.COMPLETED, backend, took=took):
            _line(INFO, "job_completed", "job %d completed in %.1fs", job.id, took or 0.0, job=job.id,
                  attempt=job.attempts, host=backend, took_s=None if took is None else round(took, 3))
        case events.JobFinished(job, JobStatus.FAILED, backend, error=error) if error is not None:
            _line(WARNING, "job_failed", "job %d failed (%s: %s)", job.id, error.type.value, error.message,
                  job=job.id, attempt=job.attempts, host=backend, error_type=error.type.value)
        case events.JobFinished(job, JobStatus.CANCELLED, backend):
            _line(INFO, "job_cancelled", "job %d was cancelled: closing its stream", job.id, job=job.id,
                  attempt=job.attempts, host=backend)
        case events.JobRetrying(job, error, delay, backend):
            _line(WARNING, "job_retrying", "job %d attempt %d failed (%s: %s); retrying in %.1fs", job.id,
                  job.attempts, error.type.value, error.message, delay, job=job.id, attempt=job.attempts,
                  host=backend, error_type=error.type.value, delay_s=round(delay, 3))
        case events.JobFellBack(job, error, model, backend):
            _line(WARNING, "job_fell_back", "job %d failed on %s (%s: %s); starting again on fallback model %s",
                  job.id, job.model, error.type.value, error.message, model, job=job.id, attempt=job.attempts,
                  host=backend, error_type=error.type.value, model=job.model, fallback=model)
        case events.ResultDropped(job, backend):
            _line(INFO, "result_dropped", "job %d finished after it was cancelled or taken back: result dropped",
                  job.id, job=job.id, attempt=job.attempts, host=backend)
        case events.JobReclaimed(job) if event.abandoned:
            _line(WARNING, "job_abandoned", "job %d abandoned: its daemon died during each of %d attempts", job.id,
                  job.attempts, job=job.id, attempt=job.attempts, error_type="abandoned")
        case events.JobReclaimed(job) if event.fell_back:
            _line(WARNING, "job_fell_back", "job %d: its daemon died during each of its attempts; starting again on "
                  "fallback model %s", job.id, job.model, job=job.id, error_type="abandoned", fallback=job.model)
        case events.JobReclaimed(job):
            _line(WARNING, "job_reclaimed", "job %d taken back from a dead daemon (attempt %d of %d)", job.id,
                  job.attempts, job.max_attempts, job=job.id, attempt=job.attempts)
        case events.JobsCleaned(count, older_than):
            _line(INFO, "jobs_cleaned", "deleted %d jobs finished more than %gs ago", count, older_than, count=count,
                  older_than_s=older_than)
        case events.BackendDown(backend, reason):
            _line(WARNING, "backend_down", "backend %s unreachable (%s): jobs wait as pending until it answers",
                  backend, reason, host=backend, error_type="unreachable", reason=reason)
        case events.BackendUp(backend):
            _line(INFO, "backend_up", "backend %s is reachable again", backend, host=backend)
        case events.BackendResting(backend, _, seconds, asked=True):
            _line(WARNING, "backend_resting", "backend %s asked to wait (Retry-After): resting %gs", backend, seconds,
                  host=backend, rest_s=seconds)
        case events.BackendResting(backend, failures, seconds):
            _line(WARNING, "backend_resting", "backend %s failed %d times in a row: resting %gs", backend, failures,
                  seconds, host=backend, failures=failures, rest_s=seconds)
        case events.ModelLoaded(backend, model):
            _line(INFO, "model_loaded", "model %s is loaded on %s", model, backend, host=backend, model=model)


class JsonLines(logging.Formatter):
    """{"time", "level", "message"}, then the record's `event` and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        from ollama_cli.timefmt import format_time

        line: dict[str, Any] = {"time": format_time(record.created), "level": record.levelname.lower(),
                                "message": record.getMessage()}
        if hasattr(record, "event"):
            line["event"] = record.event
            line.update(record.fields)
        return json.dumps(line, ensure_ascii=False)


class Marked(logging.Formatter):
    """`TIME LEVEL message`: the level as a mark of five letters that a grep finds."""

    MARKS = {"DEBUG": "DEBUG", "INFO": "INFO ", "WARNING": "WARN ", "ERROR": "ERROR", "CRITICAL": "ERROR"}

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(mark)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.mark = self.MARKS.get(record.levelname, record.levelname)
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        from ollama_cli.timefmt import local_time

        return local_time(record.created)  # with its offset: the clock of `info` and `status`


class Journal(logging.Formatter):
    """Under systemd: `<N>message`, N the syslog priority journald reads off the line's
    start (and strips), and no time: journald stamps each line itself. A message of several
    lines stays one entry (its line breaks escaped)."""

    PRIORITIES = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self._inner.format(record) if self._inner else super().format(record)
        return f"<{self.PRIORITIES.get(record.levelname, 6)}>" + text.replace("\n", "\\n")


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup(json_lines: bool, level: str = "info", journal: bool = False) -> None:
    """Log to stderr at `level` and above: a line of text per record, or one JSON object
    (--json); under journald (`journal`), each with its priority and without our time."""
    handler = logging.StreamHandler()
    if journal:
        handler.setFormatter(Journal(JsonLines() if json_lines else None))
    else:
        handler.setFormatter(JsonLines() if json_lines else Marked())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("ollama_q").setLevel(LEVELS[level])  # ours only: debug is about our decisions
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
