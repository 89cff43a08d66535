"""`submit`: one job from the command line (a module of its own: `status` and the other commands on
jobs need none of its ~30 options' code, nor `submit` theirs)."""

# No `from __future__ import annotations` here: Typer would eval() every annotation string
# on each run (8 ms for submit); real objects come from bytecode for free.
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ollama_cli import submission
from ollama_cli.cli.app import (
    DataDirOpt, JsonOpt, StoreOpt, emit, load_settings, open_store, parse_ids, quiet_or_json,
)
from ollama_cli.errors import UsageError
from ollama_cli.jobs import JobSpec, JobType, Priority, full_name
from ollama_cli.timefmt import local_time, parse_duration, parse_time

if TYPE_CHECKING:
    from ollama_cli.settings import Settings
    from ollama_cli.store.base import Engine


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
        from ollama_cli.cli.jobs import print_result

        print_result(store, job.id, wait=True, timeout=wait_limit, json_=settings.json)
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


COMMANDS = {"submit": submit}
