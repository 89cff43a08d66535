"""The daemon's log: one subscriber of its events, writing the line each has always had,
and the log's set-up (stderr, plain text or JSON lines)."""

from __future__ import annotations

import logging

from ollama_cli.daemon import events
from ollama_cli.jobs import JobStatus

log = logging.getLogger("ollama_q.daemon")


def write(event: events.Event) -> None:
    """One line for the event, at the level its news deserves."""
    match event:
        case events.DaemonStarted(daemon_id, backends, concurrency):
            log.info("daemon %s started: %s, concurrency %d per backend", daemon_id, ", ".join(backends), concurrency)
        case events.DaemonStopping(signal, now=True):
            log.warning("second %s: stopping now, handing running jobs back", signal)
        case events.DaemonStopping(signal, grace=grace, running=running):
            log.info("%s: taking no more jobs; waiting up to %gs for %d running", signal, grace, running)
        case events.DaemonDrained():
            log.info("nothing pending or running: exiting (--drain)")
        case events.JobStarted(jobs, backend):
            first = jobs[0]
            log.info("job %s started on %s (%s, attempt %d of %d)", ", ".join(str(j.id) for j in jobs), backend,
                     first.model, first.attempts, first.max_attempts)
        case events.JobFinished(job, JobStatus.COMPLETED, took=took):
            log.info("job %d completed in %.1fs", job.id, took or 0.0)
        case events.JobFinished(job, JobStatus.FAILED, error=error) if error is not None:
            log.warning("job %d failed (%s: %s)", job.id, error.type.value, error.message)
        case events.JobFinished(job, JobStatus.CANCELLED):
            log.info("job %d was cancelled: closing its stream", job.id)
        case events.JobRetrying(job, error, delay):
            log.warning("job %d attempt %d failed (%s: %s); retrying in %.1fs", job.id, job.attempts,
                        error.type.value, error.message, delay)
        case events.ResultDropped(job):
            log.info("job %d finished after it was cancelled or taken back: result dropped", job.id)
        case events.JobReclaimed(job) if event.abandoned:
            log.warning("job %d abandoned: its daemon died during each of %d attempts", job.id, job.attempts)
        case events.JobReclaimed(job):
            log.warning("job %d taken back from a dead daemon (attempt %d of %d)", job.id, job.attempts,
                        job.max_attempts)
        case events.JobsCleaned(count, older_than):
            log.info("deleted %d jobs finished more than %gs ago", count, older_than)
        case events.BackendDown(backend, reason):
            log.warning("backend %s unreachable (%s): jobs wait as pending until it answers", backend, reason)
        case events.BackendUp(backend):
            log.info("backend %s is reachable again", backend)
        case events.BackendResting(backend, _, seconds, asked=True):
            log.warning("backend %s asked to wait (Retry-After): resting %gs", backend, seconds)
        case events.BackendResting(backend, failures, seconds):
            log.warning("backend %s failed %d times in a row: resting %gs", backend, failures, seconds)
        case events.ModelLoaded(backend, model):
            log.info("model %s is loaded on %s", model, backend)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        from ollama_cli.timefmt import format_time

        return json.dumps({"time": format_time(record.created), "level": record.levelname.lower(),
                           "message": record.getMessage()})


class Text(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        from ollama_cli.timefmt import local_time

        return local_time(record.created)  # with its offset: the clock of `info` and `status`


def setup(json_lines: bool) -> None:
    """Log to stderr: a line of text per record, or one JSON object (--json)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if json_lines else Text("%(asctime)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
