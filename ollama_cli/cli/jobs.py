"""Commands on jobs: status, result, wait, cancel, retry, rerun (`submit` is in submit.py, `list` in
listing.py)."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ollama_cli.cli.app import (
    DataDirOpt, JsonOpt, StoreOpt, emit, error_line, load_settings, open_store, parse_ids, warn,
    warn_if_stalled,
)
from ollama_cli.errors import ExitCode, NotFound, OllamaQError, OperationFailed, UsageError
from ollama_cli.jobs import Job, JobSpec, JobStatus, JobType, result_to_json, result_text
from ollama_cli.timefmt import parse_duration

if TYPE_CHECKING:
    from ollama_cli.store.base import Engine
    from ollama_cli.store.records import Changed


def status(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    input_: Annotated[bool, typer.Option(
        "--input", help="Also what the job was asked: its prompt, messages or inputs, and options.")] = False,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Show jobs (with --json: an object for one ID, an array for several)."""
    settings = load_settings(json_, data_dir, store_)
    ids = parse_ids(job_ids)
    store = open_store(settings, readonly=True)
    jobs, all_found = _known(store, ids)
    where = store.positions(jobs, store.now())
    shown = []
    for job in jobs:
        obj = job.to_json(where.get(job.id))
        if input_:  # prompts are private: only when asked for
            obj["input"] = store.get_request(job.id)
        shown.append(obj)
    if settings.json:
        if shown or len(ids) > 1:
            emit(shown[0] if len(ids) == 1 else shown)
    else:
        from ollama_cli import render

        for n, obj in enumerate(shown):
            if n:
                print()
            request = obj.pop("input", None)
            render.job_detail(obj)
            if request is not None:
                print()
                render.job_input(obj["type"], request)
    if not all_found:
        raise typer.Exit(ExitCode.FAILED)


def _known(store: "Engine", ids: list[int]) -> tuple[list[Job], bool]:
    """The jobs of `ids`, in order, with an `error:` line for each unknown or unreadable one;
    and whether every one was found (else the command exits 1 once it has printed the rest,
    as `kill` does with many pids)."""
    jobs, all_found = [], True
    for jid, job in zip(ids, store.get_jobs(ids)):
        if isinstance(job, Job):
            jobs.append(job)
        else:
            error_line(f"job {jid} not found" if job is None else job.message)
            all_found = False
    return jobs, all_found


def _get(store: "Engine", jid: int) -> Job:
    job = store.get_job(jid)
    if job is None:
        raise NotFound(f"job {jid} not found")
    return job


def result(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    wait: Annotated[bool, typer.Option("--wait", help="Block until the jobs end.")] = False,
    follow_: Annotated[bool, typer.Option(
        "--follow", "-f", help="Print one job's answer as it is generated, then exit with its code.")] = False,
    timeout: Annotated[Optional[str], typer.Option(
        help="With --wait or --follow: give up after this long (exit 1).")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Print jobs' output: the text, or the vectors as JSON (with --json: an object for one
    ID, an array for several)."""
    settings = load_settings(json_, data_dir, store_)
    ids = parse_ids(job_ids)
    if follow_ and len(ids) != 1:
        raise UsageError("--follow takes one job ID")
    limit = parse_duration(timeout) if timeout is not None else None
    store = open_store(settings, readonly=True)
    if follow_:
        _follow(store, ids[0], timeout=limit, json_=settings.json)
    elif len(ids) == 1:
        print_result(store, ids[0], wait=wait, timeout=limit, json_=settings.json)
    else:
        _print_results(store, ids, wait=wait, timeout=limit, json_=settings.json)


def _not_completed(job: Job) -> str:
    if job.status is JobStatus.FAILED and job.error:
        return f"job {job.id} failed: {job.error.type.value}: {job.error.message}"
    if job.status is JobStatus.CANCELLED:
        return f"job {job.id} was cancelled"
    return f"job {job.id} is {job.status.value}"


def print_result(store: "Engine", jid: int, *, wait: bool, timeout: float | None, json_: bool) -> None:
    """The result of a completed job; else, exit 1 saying why (with --json, the result
    object too, its `status` and `error` saying the same)."""
    if wait:
        from ollama_cli import follow  # only waits import it: a plain submit or status does not pay for it

        jobs, done = follow.wait_for(store, [jid], timeout=timeout, on_wait=lambda: warn_if_stalled(store))
        if not done:
            if json_:
                emit(result_to_json(jobs[0], None))
            raise OperationFailed(f"job {jid} is still {jobs[0].status.value} after the timeout")
    job, body, problem = _answer(store, jid)
    if json_:
        emit(result_to_json(job, body))
    if problem is not None:
        raise OperationFailed(problem)
    if not json_:
        _write_text(result_text(job, body))


def _follow(store: "Engine", jid: int, *, timeout: float | None, json_: bool) -> None:
    """`result --follow`: the answer as it streams in, then the rest of the stored result,
    and the job's exit code. With --json, or for an embed job (no text streams), the same
    as `result --wait`."""
    job = _get(store, jid)
    if json_ or job.type is JobType.EMBED:
        print_result(store, jid, wait=True, timeout=timeout, json_=json_)
        return

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def started_over(attempt: int) -> None:
        sys.stdout.write("\n")
        sys.stdout.flush()
        warn(f"job {jid}: attempt {attempt} started, its answer starts over")

    from ollama_cli import follow

    if job.status is JobStatus.PENDING:
        warn_if_stalled(store)
    job, followed, done = follow.follow_text(store, jid, show=show, started_over=started_over, timeout=timeout)
    if not done:
        if followed.text:
            show("\n")
        raise OperationFailed(f"job {jid} is still {job.status.value} after the timeout")
    job, body, problem = _answer(store, jid)
    if problem is not None:
        if followed.text:
            show("\n")
        raise OperationFailed(problem)
    text = result_text(job, body)
    if not text.startswith(followed.text):  # the run that answered is not the one shown
        show("\n")
        warn(f"job {jid}: its answer came from a later attempt, shown whole")
        followed.text = ""
    _write_text(text[len(followed.text):] if followed.text else text)


def _answer(store: "Engine", jid: int) -> tuple[Job, dict[str, Any] | None, str | None]:
    """A job, its result if it completed, and if not, why not (NotFound if no such job)."""
    job = _get(store, jid)
    if job.status is not JobStatus.COMPLETED:
        return job, None, _not_completed(job)
    body = store.get_result(jid)
    return job, body, None if body is not None else f"job {jid} completed but its result is gone"


def _write_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _print_results(store: "Engine", ids: list[int], *, wait: bool, timeout: float | None, json_: bool) -> None:
    """Several jobs' output, in the order asked, each under a `==> job N <==` line (as `head`
    heads several files); an `error:` line for each that did not complete, then exit 1.
    With --json, an array of result objects: one that did not complete says why, as for one."""
    if wait:
        from ollama_cli import follow

        follow.wait_for(store, [j.id for j in store.get_jobs(ids) if isinstance(j, Job)], timeout=timeout,
                        on_wait=lambda: warn_if_stalled(store))
    objects, answers, all_completed = [], [], True
    for jid in ids:
        try:
            job, body, problem = _answer(store, jid)
        except OllamaQError as exc:  # unknown, or unreadable
            error_line(exc.message)
            all_completed = False
            continue
        objects.append(result_to_json(job, body))
        if problem is None:
            answers.append((job, body))
        else:
            error_line(problem)
            all_completed = False
    if json_:
        emit(objects)
    else:
        for n, (job, body) in enumerate(answers):
            print(f"\n==> job {job.id} <==" if n else f"==> job {job.id} <==")
            _write_text(result_text(job, body))
    if not all_completed:
        raise typer.Exit(ExitCode.FAILED)


def cancel(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Cancel pending or running jobs (a running one is aborted)."""
    settings = load_settings(json_, data_dir, store_)
    ids = parse_ids(job_ids)
    store = open_store(settings)
    _report(
        store.cancel(ids, store.now()),
        refusal=lambda job: f"job {job.id} is already {job.status.value}",
        done=lambda job: f"job {job.id} cancelled", json_=settings.json,
    )


def wait(
    job_ids: Annotated[Optional[list[str]], typer.Argument(metavar="[ID...]")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every job not yet finished.")] = False,
    timeout: Annotated[Optional[str], typer.Option(help="Give up after this long (exit 1).")] = None,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Block until jobs end; exit 0 only if all completed."""
    settings = load_settings(json_, data_dir, store_)
    if bool(job_ids) == all_:
        raise UsageError("give job IDs or --all")
    ids = parse_ids(job_ids or [])
    limit = parse_duration(timeout) if timeout is not None else None
    store = open_store(settings, readonly=True)
    if all_:
        ids = sorted(store.ids_with_status(JobStatus.PENDING, JobStatus.RUNNING))
    from ollama_cli import follow

    if sys.stderr.isatty() and not settings.json and ids:
        from ollama_cli import render

        with render.progress(len(ids)) as advance:
            jobs, done = follow.wait_for(store, ids, timeout=limit, on_progress=lambda n, _: advance(n),
                                         on_wait=lambda: warn_if_stalled(store))
    else:
        jobs, done = follow.wait_for(store, ids, timeout=limit, on_wait=lambda: warn_if_stalled(store))
    rows = [j.to_json() for j in jobs]
    if settings.json:
        emit(rows)
    else:
        from ollama_cli import render

        render.jobs_table(rows)
    if not done:
        error_line(f"timed out with {sum(not j.status.finished for j in jobs)} of {len(jobs)} jobs unfinished")
    if not done or any(j.status is not JobStatus.COMPLETED for j in jobs):
        raise typer.Exit(ExitCode.FAILED)


def retry(
    job_ids: Annotated[Optional[list[str]], typer.Argument(metavar="[ID...]")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed job.")] = False,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Queue failed or cancelled jobs again (their attempts start over)."""
    settings = load_settings(json_, data_dir, store_)
    if bool(job_ids) == all_failed:
        raise UsageError("give job IDs or --all-failed")
    ids = parse_ids(job_ids or [])
    store = open_store(settings)
    _report(
        store.retry(ids or None, store.now()),
        refusal=lambda job: f"job {job.id} is {job.status.value}: only failed or cancelled jobs can be retried",
        done=lambda job: f"job {job.id} queued again" if job.status is JobStatus.PENDING else _not_completed(job),
        json_=settings.json,
    )


def rerun(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...")],
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Queue each job's request again as a new job, whatever became of it; the job itself
    is left as it is. The new job has the same model, type, priority, name, retries,
    timeout, keep-alive and fallbacks left, starts as soon as a daemon takes it, and is never
    answered from the cache (it is asked again)."""
    settings = load_settings(json_, data_dir, store_)
    ids = parse_ids(job_ids)
    store = open_store(settings)
    jobs, all_found = _known(store, ids)
    specs = [JobSpec(model=j.model, type=j.type, request=store.get_request(j.id), priority=j.priority, name=j.name,
                     max_attempts=j.max_attempts, timeout=j.timeout, keep_alive=j.keep_alive, use_cache=False,
                     fallbacks=j.fallbacks)
             for j in jobs]
    new = store.submit_many(specs, store.now()) if specs else []
    where = store.positions(new, store.now())
    if settings.json:
        emit([{"id": n.id, "rerun_of": old.id, "name": n.name, "status": n.status.value, "position": where.get(n.id)}
              for old, n in zip(jobs, new)])
    else:
        for old, n in zip(jobs, new):
            place = f", position {where[n.id]}" if n.id in where else ""
            print(f"job {n.id} queued (rerun of job {old.id}; {n.model}, {n.priority.value}{place})")
    if not all_found:
        raise typer.Exit(ExitCode.FAILED)


def _report(
    changes: "list[Changed]",
    *,
    refusal: Callable[[Job], str],
    done: Callable[[Job], str],
    json_: bool,
) -> None:
    """Report on each job a change went through (all in one transaction); exit 1 if one was
    unknown or refused (the others are changed all the same, as `kill` does with many pids)."""
    for change in changes:
        if change.job is None:
            error_line(f"job {change.id} not found")
        elif not change.changed:
            error_line(refusal(change.job))
        elif not json_:
            print(done(change.job))
    if json_:
        emit([{"id": c.id, "status": c.job.status.value if c.job else None} for c in changes])
    if not all(c.changed for c in changes):
        raise typer.Exit(ExitCode.FAILED)


COMMANDS = {"status": status, "result": result, "wait": wait,
            "cancel": cancel, "retry": retry, "rerun": rerun}
