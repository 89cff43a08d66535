"""`daemon --on-finish COMMAND`: run `sh -c COMMAND` once per finished job, at least once.

The store keeps the events (`Engine.claim_hook_events`: the transaction that finishes a job
records one while some daemon says it runs hooks). This daemon says so as long as it lives
(`record_hooks_until`, pushed forward every RENEW seconds, RECORD_FOR ahead), claims events
as it claims jobs, runs at most CONCURRENCY commands at once, each with the job's JSON on
stdin and its id, status, model, name and batch in OLLAMA_Q_JOB_* variables, kills one that
runs longer than `--hook-timeout` (its whole process group), and deletes the event once the
command has ended, whatever its exit code (with its next claim, in one transaction): a hook's failure is logged and changes nothing of
the job. A daemon that dies leaves the events it held to the next daemon; one that stops
lets running hooks finish within its grace period, and leaves the rest the same way."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ollama_cli.daemon import events
from ollama_cli.errors import StoreUnavailable
from ollama_cli.settings import child_environment

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine
    from ollama_cli.store.records import HookEvent

log = logging.getLogger("ollama_q.daemon")

CONCURRENCY = 4  # hooks at once
POLL = 1.0  # seconds between looks for events when nothing wakes the runner (a cancel by the CLI)
RECORD_FOR = 3600.0  # events are recorded this long past this daemon's last word (a restart's gap)
RENEW = 60.0  # seconds between those words
OUTPUT_TAIL = 4096  # bytes of a hook's output kept for the debug log


Write = Callable[..., Awaitable[Any]]


class Hooks:
    """The hook runner of one daemon: `start` before the daemon's first tick, `stop` at its end."""

    def __init__(self, store: Engine, write: Write, command: str, timeout: float, clock: Callable[[], float]) -> None:
        self.store, self.write, self.command, self.timeout, self.clock = store, write, command, timeout, clock
        self.owner = ""
        self.running: dict[int, asyncio.Task[None]] = {}
        self._done: list[int] = []  # events whose hook ended, deleted with the next claim
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, owner: str) -> None:
        """Jobs that finish from now on get events (before the daemon's first tick finishes
        any); then look for events in the background."""
        self.owner = owner
        await self.write(self.store.record_hooks_until, self.clock() + RECORD_FOR)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def on_event(self, event: events.Event) -> None:
        """A subscriber of the daemon's events: a job this daemon finished has an event now."""
        if isinstance(event, (events.JobFinished, events.JobReclaimed)):
            self._wake.set()

    def idle(self) -> bool:
        """No hook running here, and none left in the store (a dead daemon's included)."""
        if self.running or self._done:
            return False
        try:
            return self.store.hook_events_pending() == 0
        except StoreUnavailable:  # a server restarting: not known to be done
            return False

    async def _run(self) -> None:
        renew_at = self.clock() + RENEW
        while not self._stopping:
            self._wake.clear()
            try:
                if self.clock() >= renew_at:
                    await self.write(self.store.record_hooks_until, self.clock() + RECORD_FOR)
                    renew_at = self.clock() + RENEW
                await self._claim(CONCURRENCY - len(self.running))
            except Exception as exc:  # the store unreachable for a while: try again at the next poll
                log.warning("hooks: cannot reach the store (%s)", type(exc).__name__)
            timer = asyncio.get_running_loop().call_later(POLL, self._wake.set)
            await self._wake.wait()
            timer.cancel()

    async def _claim(self, free: int) -> None:
        """One transaction: the events of hooks that ended go, and up to `free` new ones start
        (hooks that end together cost one commit)."""
        done, self._done = self._done, []
        try:
            claimed = await self.write(self.store.claim_hook_events, self.owner, max(0, free), done=done)
        except BaseException:
            self._done[:0] = done  # not deleted: again with the next claim
            raise
        for event in claimed:
            self.running[event.id] = asyncio.get_running_loop().create_task(self._hook(event))

    async def _hook(self, event: HookEvent) -> None:
        try:
            if await self._execute(event):
                self._done.append(event.id)
        except asyncio.CancelledError:
            raise
        except Exception:  # ours, not the hook's: counted as run all the same, or --drain would wait for ever
            log.exception("hook for job %d: could not be run", event.job.id)
            self._done.append(event.id)
        finally:
            self.running.pop(event.id, None)
            self._wake.set()

    async def _execute(self, event: HookEvent) -> bool:
        """Run the command; whether it ended (exited, failed to start, or was killed for its
        timeout), as opposed to being stopped by the daemon's own shutdown."""
        job = event.job
        env = child_environment({
            "OLLAMA_Q_JOB_ID": str(job.id), "OLLAMA_Q_JOB_STATUS": job.status.value,
            "OLLAMA_Q_JOB_MODEL": job.model, "OLLAMA_Q_JOB_NAME": job.name or "",
            "OLLAMA_Q_JOB_BATCH": job.batch or "",
        })
        try:
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)  # a group: killed whole
        except OSError as exc:
            log.warning("hook for job %d could not start: %s", job.id, exc.strerror or exc,
                        extra=_fields("hook_failed", job.id, error_type="spawn"))
            return True
        tail = bytearray()
        try:
            await asyncio.wait_for(self._talk(proc, json.dumps(job.to_json()).encode() + b"\n", tail), self.timeout)
        except asyncio.TimeoutError:
            _kill(proc)
            await proc.wait()
            log.warning("hook for job %d killed after %gs (--hook-timeout)", job.id, self.timeout,
                        extra=_fields("hook_failed", job.id, error_type="timeout"))
            _debug_output(job.id, tail)
            return True
        except asyncio.CancelledError:  # the daemon stops: the event stays for the next one
            _kill(proc)
            await proc.wait()
            raise
        if proc.returncode:
            log.warning("hook for job %d exited with %d", job.id, proc.returncode,
                        extra=_fields("hook_failed", job.id, error_type="exit", exit_code=proc.returncode))
        else:
            log.debug("hook for job %d ran", job.id, extra=_fields("hook_ran", job.id))
        _debug_output(job.id, tail)
        return True

    @staticmethod
    async def _talk(proc: asyncio.subprocess.Process, stdin: bytes, tail: bytearray) -> None:
        """Give the job's JSON, keep the end of what it prints, wait for it to exit."""
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(stdin)
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # a hook that does not read its stdin
        while chunk := await proc.stdout.read(65536):
            tail += chunk
            del tail[:-OUTPUT_TAIL]
        await proc.wait()

    async def stop(self, grace: float) -> None:
        """Claim nothing more; let running hooks finish within `grace` seconds, then kill
        them, leaving their events to the next daemon."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        tasks = list(self.running.values())
        if tasks:
            log.info("waiting up to %gs for %d hooks", grace, len(tasks))
            _, late = await asyncio.wait(tasks, timeout=grace) if grace > 0 else (set(), set(tasks))
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._done:
            try:
                await self._claim(0)
            except Exception as exc:  # left held by this daemon: the next one runs them again
                log.warning("hooks: cannot record %d hooks as run (%s)", len(self._done), type(exc).__name__)


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _fields(event: str, job_id: int, **fields: Any) -> dict[str, Any]:
    """What the JSON lines of the log (`logs.JsonLines`) add to a record."""
    return {"event": event, "fields": {"job": job_id, **fields}}


def _debug_output(job_id: int, tail: bytearray) -> None:
    if tail and log.isEnabledFor(logging.DEBUG):
        log.debug("hook for job %d printed: %s", job_id, tail.decode("utf-8", "replace").rstrip())
