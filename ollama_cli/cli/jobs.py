"""Commands on jobs: submit, status, result, wait, cancel, retry, rerun (`list` is in listing.py)."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ollama_cli import submission
from ollama_cli.cli.app import (
    DataDirOpt, JsonOpt, StoreOpt, emit, error_line, load_settings, open_store, parse_ids, quiet_or_json, warn,
    warn_if_stalled,
)
from ollama_cli.errors import ExitCode, NotFound, OllamaQError, OperationFailed, UsageError
from ollama_cli.jobs import Job, JobSpec, JobStatus, JobType, Priority, full_name, result_to_json, result_text
from ollama_cli.timefmt import local_time, parse_duration, parse_time

if TYPE_CHECKING:
    from ollama_cli.settings import Settings
    from ollama_cli.store.base import Engine
    from ollama_cli.store.records import Changed


def _read_stdin() -> str | None:
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("stdin is not UTF-8 text") from None
    return text if text.strip() else None


def _read_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"{what}: no such file {path!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what}: cannot read {path!r}: {exc}") from None


def submit(
    model: Annotated[str, typer.Argument(help="The model, e.g. llama3.2.")],
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt; - reads stdin.")] = None,
    type_: Annotated[JobType, typer.Option("--type", "-t", case_sensitive=False)] = JobType.GENERATE,
    system: Annotated[Optional[str], typer.Option(help="A system prompt.")] = None,
    message: Annotated[Optional[list[str]], typer.Option("--message", "-m", help="ROLE:CONTENT (repeatable).")] = None,
    messages: Annotated[Optional[str], typer.Option(
        "--messages", metavar="FILE", help="A file holding a JSON array of messages.")] = None,
    input_: Annotated[Optional[list[str]], typer.Option("--input", help="Text to embed (repeatable).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="KEY=VALUE (repeatable).")] = None,
    format_: Annotated[Optional[str], typer.Option("--format", help="json or @schema.json.")] = None,
    priority: Annotated[Optional[Priority], typer.Option(
        "--priority", "-p", case_sensitive=False, help="Default medium, or `priority` in the config file.",
        show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(help="A name for the job (list --name finds it).")] = None,
    retries: Annotated[Optional[int], typer.Option(
        help="Retries after transient failures (default 3).", min=0, max=100, show_default=False)] = None,
    timeout: Annotated[Optional[str], typer.Option(help="Time limit of each attempt, e.g. 10m.")] = None,
    delay: Annotated[Optional[str], typer.Option(help="Start no sooner than this from now, e.g. 1h30m.")] = None,
    at: Annotated[Optional[str], typer.Option(
        help="Start no sooner than this RFC 3339 time, or HH:MM (the next one, local time).")] = None,
    after: Annotated[Optional[list[str]], typer.Option(help="Start once job ID completed (repeatable).")] = None,
    keep_alive: Annotated[Optional[str], typer.Option(help="How long Ollama keeps the model loaded.")] = None,
    category: Annotated[Optional[str], typer.Option(
        help="A task category for statistics and routing (letters, digits, -, _, .).")] = None,
    fallback: Annotated[Optional[list[str]], typer.Option(
        metavar="MODEL", help="If the model is missing or attempts run out, start again on this one (repeatable).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not answer from the result cache.")] = False,
    semantic_cache: Annotated[bool, typer.Option(
        "--semantic-cache", help="Also answer from a semantically similar completed request.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result and print it.")] = False,
    wait_timeout: Annotated[Optional[str], typer.Option(
        help="Wait for the result at most this long (implies --wait; exit 1 on expiry).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the job's id.")] = False,
    json_: JsonOpt = False,
    data_dir: DataDirOpt = None,
    store_: StoreOpt = None,
) -> None:
    """Queue a job."""
    settings = load_settings(json_, data_dir, store_, priority=priority, retries=retries, timeout=timeout,
                             keep_alive=keep_alive, cache_semantic=semantic_cache)
    quiet_or_json(quiet, settings.json)
    model = submission.model_name(model)
    # With the chat or the inputs given as options, PROMPT is optional: stdin is read only
    # when asked for, so a submit in a `while read` loop leaves the loop its lines.
    others = (message or messages is not None) if type_ is JobType.CHAT else \
        bool(input_) if type_ is JobType.EMBED else False
    if prompt == "-" or (prompt is None and not others and not sys.stdin.isatty()):
        prompt = _read_stdin()
    chat: list[dict[str, Any]] = []
    if messages is not None:
        chat += submission.parse_messages(_read_file(messages, "--messages"), messages)
    chat += [submission.parse_message(m) for m in message or []]
    options = dict(submission.parse_option(o) for o in option or [])
    request = submission.build_request(
        type_, prompt=prompt, system=system, messages=chat, inputs=input_ or [], options=options,
        format=submission.parse_format(format_) if format_ is not None else None,
    )
    if delay is not None and at is not None:
        raise UsageError("give --delay or --at, not both")
    run_at = _run_at(delay, at)
    wait_limit = parse_duration(wait_timeout) if wait_timeout is not None else None
    spec = JobSpec(
        model=model,
        type=type_,
        request=request,
        priority=settings.priority,
        name=submission.check_text(name, "--name") if name is not None else None,
        max_attempts=settings.retries + 1,
        timeout=settings.timeout,
        run_at=None,
        after=tuple(dict.fromkeys(parse_ids(after or []))),
        keep_alive=settings.keep_alive,
        use_cache=not no_cache,
        semantic_cache=settings.cache.semantic and not no_cache,
        category=submission.category_name(category) if category is not None else None,
        fallbacks=submission.fallbacks(model, fallback) if fallback else (),
    )
    if semantic_cache and no_cache:
        raise UsageError("give --semantic-cache or --no-cache, not both")
    auto = model == submission.AUTO
    if auto and spec.category is None:
        raise UsageError("submit auto needs --category NAME: the model is chosen by how models served that category")
    store = open_store(settings)
    now = store.now()
    if auto:
        spec = _routed(store, spec, settings, now)
    job = store.submit(spec._replace(run_at=run_at(now) if run_at else None), now)
    if wait or wait_timeout is not None:
        _print_result(store, job.id, wait=True, timeout=wait_limit, json_=settings.json)
        return
    pos = store.positions([job], now).get(job.id)
    if settings.json:
        shown = {"id": job.id, "name": job.name, "status": job.status.value, "position": pos}
        emit({**shown, "model": job.model} if auto else shown)
    elif quiet:
        print(job.id)
    elif job.cached:
        print(f"job {job.id} completed from the cache{' by ' + job.model if auto else ''}")
    else:
        where = f", position {pos}" if pos else ""
        held = f", held until {local_time(job.run_at)}" if job.run_at is not None and job.run_at > now else ""
        routed = f" (routing: {job.route[0]})" if job.route else ""
        print(f"job {job.id} queued ({job.model}{routed}, {job.priority.value}{where}{held})")


def _routed(store: "Engine", spec: JobSpec, settings: "Settings", now: float) -> JobSpec:
    """The spec on the model the routing rule chooses for its category, with how it chose; a
    fallback that names the chosen model is dropped (it would only run the job again there)."""
    from ollama_cli.insight import routing

    assert spec.category is not None
    chosen = routing.choose(store, spec.category, spec.type.value, settings.routing, now)
    name = full_name(chosen.model)
    bound = None if chosen.lower_bound is None else round(chosen.lower_bound, 4)
    return spec._replace(model=chosen.model, route=(chosen.rule, bound, chosen.rated),
                         fallbacks=tuple(f for f in spec.fallbacks if full_name(f) != name))


def _run_at(delay: Optional[str], at: Optional[str]) -> Optional[Callable[[float], float]]:
    """When a job is held until, as a function of the store's clock (read once the store is
    open; the text is checked before, so a bad one opens nothing)."""
    if delay is not None:
        seconds = parse_duration(delay)
        return lambda now: now + seconds
    if at is not None:
        parse_time(at, 0.0)
        return lambda now: parse_time(at, now)
    return None


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
        _print_result(store, ids[0], wait=wait, timeout=limit, json_=settings.json)
    else:
        _print_results(store, ids, wait=wait, timeout=limit, json_=settings.json)


def _not_completed(job: Job) -> str:
    if job.status is JobStatus.FAILED and job.error:
        return f"job {job.id} failed: {job.error.type.value}: {job.error.message}"
    if job.status is JobStatus.CANCELLED:
        return f"job {job.id} was cancelled"
    return f"job {job.id} is {job.status.value}"


def _print_result(store: "Engine", jid: int, *, wait: bool, timeout: float | None, json_: bool) -> None:
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
        _print_result(store, jid, wait=True, timeout=timeout, json_=json_)
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


COMMANDS = {"submit": submit, "status": status, "result": result, "wait": wait,
            "cancel": cancel, "retry": retry, "rerun": rerun}
