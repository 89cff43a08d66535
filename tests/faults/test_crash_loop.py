"""The crash-loop harness (lmdb-and-faults.md §2.2 row 20) and seeded backend faults:
real daemons in their own processes, SIGKILLed at random points many times, while the
emulator fails a seeded share of requests or other processes keep submitting.

Every test here asserts outcomes, never timings: random delays only choose where a kill
lands. Run with -s to see the figures each test prints."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ollama_cli import follow
from ollama_cli.jobs import Job, JobStatus
from ollama_cli.store import open_store
from tests.emulator import Emulator
from tests.helpers.backend import clean_answers, generation_requests
from tests.helpers.invariants import check_invariants
from tests.helpers.jobs import make_spec
from tests.helpers.processes import Lines, acknowledged, start_submitter

pytestmark = pytest.mark.slow

MODEL = "llama3.2"
DAEMON_ARGS = ("-c", "4", "--retry-backoff", "10ms")


class QuietEmulator(Emulator):
    """The emulator without socketserver's traceback for each connection a killed
    daemon left behind (expected here, and noise under -s)."""

    def start(self) -> QuietEmulator:
        super().start()
        assert self._server is not None
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        return self


class FaultLog(QuietEmulator):
    """The emulator, also noting which prompt each injected fault hit (a request is
    recorded, then checked for a fault, in the same handler thread)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._current = threading.local()
        self.faulted: Counter[str] = Counter()
        self.fault_kinds: Counter[str] = Counter()

    def _record(self, method: str, path: str, body: Any, generation: bool) -> None:
        self._current.prompt = body.get("prompt") if generation and isinstance(body, dict) else None
        super()._record(method, path, body, generation)

    def _take_fault(self, spec: Any) -> Any:
        fault = super()._take_fault(spec)
        if fault is not None:
            with self._cond:
                self.faulted[self._current.prompt] += 1
                self.fault_kinds[f"{fault.kind}{fault.status if fault.kind == 'status' else ''}"] += 1
        return fault


# ----------------------------------------------------------------------------- helpers


def submit_all(data_dir: Path, prompts: list[str], *, max_attempts: int,
               options: dict[str, Any] | None = None) -> None:
    """Queue one generate job per prompt in one transaction, then close the store: the
    daemons are other processes, and LMDB allows one open of an env per process."""
    extra = {"options": options} if options else {}
    specs = [make_spec(p, model=MODEL, max_attempts=max_attempts, request={"prompt": p, **extra}) for p in prompts]
    with open_store(data_dir) as store:
        store.submit_many(specs, time.time())


def read_jobs(data_dir: Path) -> dict[int, tuple[Job, str, dict[str, Any] | None]]:
    """id -> (job, its prompt, its stored result), every record decoded."""
    with open_store(data_dir) as store:
        jobs, corrupt = store.list_jobs()
        assert corrupt == []
        return {j.id: (j, store.get_request(j.id)["prompt"], store.get_result(j.id)) for j in jobs}


def prompts_sent(emu: Emulator) -> Counter[str]:
    """Generation requests per prompt. A body a kill cut short is no JSON (recorded as
    None) and never reached a model, so it is not counted."""
    return Counter(body["prompt"] for body in generation_requests(emu, "/api/generate") if isinstance(body, dict))


def freeze_then_kill(daemons: list[Any]) -> None:
    """SIGSTOP every daemon and wait until all are stopped, then SIGKILL them: none can
    act on another's death before it dies itself, so the daemons of one round are all
    alive, then all dead, as far as the queue can tell."""
    for d in daemons:
        assert d.proc.poll() is None, f"a daemon exited by itself:\n{d.log()}"
        os.kill(d.pid, signal.SIGSTOP)
    for d in daemons:
        _, status = os.waitpid(d.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status), f"a daemon exited by itself:\n{d.log()}"
    for d in daemons:
        os.kill(d.pid, signal.SIGKILL)
    for d in daemons:
        assert d.proc.wait(10) == -signal.SIGKILL


def wait_drained(daemon: Any, timeout: float) -> None:
    """A `--drain` daemon exits 0 by itself. If it does not, show where it is stuck:
    with PYTHONFAULTHANDLER set (see `dumps_on_abort`), SIGABRT makes it print every
    thread's stack into its log."""
    try:
        code = daemon.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            wchan = Path(f"/proc/{daemon.pid}/wchan").read_text()
            threads = len(os.listdir(f"/proc/{daemon.pid}/task"))
        except OSError:
            wchan, threads = "?", "?"
        daemon.signal(signal.SIGABRT)
        daemon.wait(10)
        pytest.fail(f"the --drain daemon did not exit within {timeout:g}s (wchan={wchan}, "
                    f"threads={threads}); its log ends:\n{daemon.log()[-8000:]}")
    assert code == 0, daemon.log()


@pytest.fixture(autouse=True)
def dumps_on_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # daemons inherit it through cli_env


# ------------------------------------------------------------------- seeded faults


@pytest.mark.timeout(180)
def test_seeded_backend_faults_are_retried_to_the_clean_answer(data_dir: Path, start_daemon) -> None:
    prompts = [f"faulty backend {i}" for i in range(60)]
    submit_all(data_dir, prompts, max_attempts=9)  # --retries 8
    emu = FaultLog().start()
    try:
        emu.failure_rate(0.3, kinds=("status500", "status503", "stream_error", "drop"), seed=20240611)
        daemon = start_daemon(emu.url, *DAEMON_ARGS, "--drain", wait=False)
        wait_drained(daemon, 150)
    finally:
        emu.stop()
    sent, faulted = prompts_sent(emu), emu.faulted
    print(f"\nbackend-faults: jobs={len(prompts)} requests={sum(sent.values())} "
          f"faults={sum(faulted.values())} {dict(sorted(emu.fault_kinds.items()))} "
          f"max_attempts_seen={max(sent.values())}")
    assert sum(faulted.values()) > 0 and set(faulted) <= set(prompts)

    jobs = read_jobs(data_dir)
    clean = clean_answers(prompts)
    assert sorted(p for _, p, _ in jobs.values()) == sorted(prompts)
    for job, prompt, result in jobs.values():
        assert job.status is JobStatus.COMPLETED, (job, daemon.log())
        # Each injected fault cost exactly one attempt, each attempt exactly one request.
        assert job.attempts == 1 + faulted[prompt] == sent[prompt], (job, faulted[prompt], sent[prompt])
        assert result is not None and result["response"] == clean[prompt], (job.id, result)
        assert job.error is None and job.lease is None
    check_invariants(data_dir)


# ---------------------------------------------------------------------- crash loop

CRASH_JOBS = 300
CRASH_ROUNDS = 25


@pytest.mark.timeout(240)
def test_crash_loop_loses_nothing_and_never_runs_a_job_twice_at_once(data_dir: Path, start_daemon) -> None:
    """Each round starts one daemon (two, one round in three) on a fresh emulator, lets
    them work until a random point, then kills them all. A job runs again only after
    the daemon that ran it is dead, so within one round no prompt may reach the backend
    twice; each round's own emulator tells exactly which requests that round made."""
    rng = random.Random(0xC0FFEE)
    prompts = [f"crash loop {i}" for i in range(CRASH_JOBS)]
    # Enough attempts that no job is abandoned: a job loses at most one attempt per round.
    submit_all(data_dir, prompts, max_attempts=CRASH_ROUNDS + 2)

    sent: Counter[str] = Counter()
    daemons_run, kills, two_daemon_rounds = [], 0, 0
    for round_ in range(CRASH_ROUNDS):
        emu = QuietEmulator(token_delay=0.002).start()
        try:
            n = 2 if rng.random() < 1 / 3 else 1
            two_daemon_rounds += n == 2
            daemons = [start_daemon(emu.url, *DAEMON_ARGS, wait=False) for _ in range(n)]
            daemons_run += daemons
            if rng.random() < 0.2:  # anywhere from process start-up on
                time.sleep(rng.uniform(0.0, 0.6))
            else:  # among the requests
                emu.wait_requests(rng.randint(1, 8), timeout=5)
                time.sleep(rng.uniform(0.0, 0.01))
            freeze_then_kill(daemons)
            kills += n
        finally:
            emu.stop()
        this_round = prompts_sent(emu)
        twice = {p: c for p, c in this_round.items() if c > 1}
        assert not twice, f"round {round_}: run twice while its daemons lived: {twice}"
        sent += this_round
        # After every kill: nothing lost, no job in two states, indexes match records.
        with open_store(data_dir) as store:
            check_invariants(store)
            assert store.counts()["total"] == CRASH_JOBS

    emu = QuietEmulator(token_delay=0.002).start()
    try:
        last = start_daemon(emu.url, *DAEMON_ARGS, "--drain", wait=False)
        wait_drained(last, 120)
        daemons_run.append(last)
    finally:
        emu.stop()
    assert max(prompts_sent(emu).values(), default=0) <= 1
    sent += prompts_sent(emu)

    jobs = read_jobs(data_dir)
    by_prompt = {p: (job, result) for job, p, result in jobs.values()}
    completed = sum(job.status is JobStatus.COMPLETED for job, _ in by_prompt.values())
    duplicated = sum(c - 1 for c in sent.values() if c > 1)
    max_attempts = max(job.attempts for job, _ in by_prompt.values())
    retaken = sum(job.attempts - 1 for job, _ in by_prompt.values())
    logged = sum(d.log().count("taken back from a dead daemon") for d in daemons_run)
    print(f"\ncrash-loop: kills={kills} jobs={CRASH_JOBS} lost={CRASH_JOBS - completed} "
          f"duplicated_executions={duplicated} max_attempts_seen={max_attempts}")
    print(f"crash-loop detail: rounds={CRASH_ROUNDS} two_daemon_rounds={two_daemon_rounds} "
          f"requests={sum(sent.values())} jobs_retaken={retaken} retakes_logged={logged} "
          f"jobs_with_extra_attempts={sum(job.attempts > 1 for job, _ in by_prompt.values())} "
          f"lock_files_left={len(list((data_dir / 'daemons').glob('*.lock')))}")

    assert len(jobs) == CRASH_JOBS and sorted(by_prompt) == sorted(prompts)
    clean = clean_answers(prompts)
    for prompt, (job, result) in by_prompt.items():
        assert job.status is JobStatus.COMPLETED, job
        assert result is not None and result["response"] == clean[prompt], (job.id, result)
        # At most one request per attempt; at most one lost attempt per round.
        assert 1 <= sent[prompt] <= job.attempts <= CRASH_ROUNDS + 1, (job, sent[prompt])
    # Every attempt beyond a job's first follows a take-back (no backend faults here);
    # a killed daemon may not have logged the last take-back it committed.
    assert logged <= retaken
    check_invariants(data_dir)


# ------------------------------------------------- cancel and retry of running jobs

# Fewer jobs than the daemons have slots, so that a job retried finds a free slot in either
# daemon at once; answers long enough (10 s) that none ends before the trials do.
CHURN_JOBS = 8
CHURN_TRIALS = 30
CHURN_ARGS = ("-c", "8")
LONG = {"num_predict": 200}  # at the emulator's 50 ms a token


@pytest.mark.timeout(240)
def test_cancel_then_retry_of_running_jobs_never_runs_one_twice_at_once(data_dir: Path, start_daemon) -> None:
    """`cancel ID && retry ID` on a job being answered, again and again, while two daemons take
    jobs: the job runs again, but never while its previous run is still open, in the daemon
    that ran it or the other one (issue 9, item 1). The emulator tells: a request that arrives
    while one of the same body is still being answered is an overlap."""
    rng = random.Random(0x5EED)
    prompts = [f"churn {i}" for i in range(CHURN_JOBS)]
    submit_all(data_dir, prompts, max_attempts=1, options=LONG)
    ids = {p: i for i, p in enumerate(prompts, start=1)}
    emu = QuietEmulator(token_delay=0.05).start()
    try:
        daemons = [start_daemon(emu.url, *CHURN_ARGS) for _ in range(2)]
        with open_store(data_dir) as store:
            for trial in range(CHURN_TRIALS):
                assert emu.wait_for(lambda: bool(emu.answering())), f"trial {trial}: nothing being answered"
                prompt = rng.choice(sorted(body["prompt"] for body in emu.answering()))
                before = prompts_sent(emu)[prompt]
                store.cancel([ids[prompt]], time.time())
                store.retry([ids[prompt]], time.time())
                # Until its next run has begun: the retry ran it again.
                assert emu.wait_for(lambda: prompts_sent(emu)[prompt] > before), \
                    f"trial {trial}: job {ids[prompt]} did not run again\n" + "".join(d.log() for d in daemons)
            emu.token_delay = 0.0  # the trials are over: let the answers end
            jobs, done = follow.wait_for(store, ids.values(), timeout=120)
            assert done, [j for j in jobs if not j.status.finished]
        for d in daemons:
            d.signal(signal.SIGTERM)
            assert d.wait() == 0, d.log()
    finally:
        emu.stop()
    sent = prompts_sent(emu)
    print(f"\ncancel-retry: trials={CHURN_TRIALS} daemons=2 requests={sum(sent.values())} "
          f"overlaps={len(emu.overlaps)}")
    assert emu.overlaps == []
    clean = clean_answers(prompts, options=LONG)
    for job, prompt, result in read_jobs(data_dir).values():
        assert job.status is JobStatus.COMPLETED, job
        assert result is not None and result["response"] == clean[prompt], (job.id, result)
    check_invariants(data_dir)


# ---------------------------------------------------- kill -9 among many submitters

@pytest.mark.timeout(180)
def test_kill_9_while_many_processes_submit(data_dir: Path, start_daemon) -> None:
    """Four processes submit 50 jobs each while the daemon is SIGKILLed and restarted five
    times; a fifth submitter is itself SIGKILLed part-way. Every acknowledged submission
    is there, under the id it was given, and completes."""
    rng = random.Random(1337)
    with open_store(data_dir):
        pass  # create the store once, before five processes race to
    emu = QuietEmulator(token_delay=0.002).start()
    try:
        submitters = [start_submitter(data_dir, f"submitter-{k}", 50, pause=0.04, seed=k, max_attempts=20)
                      for k in range(4)]
        victim = start_submitter(data_dir, "victim", 1000, pause=0.04, seed=99, max_attempts=20)
        assert victim.stdout is not None
        victim_lines = Lines(victim.stdout)
        victim_target = rng.randint(5, 30)
        for kill in range(5):
            daemon = start_daemon(emu.url, *DAEMON_ARGS, wait=False)
            time.sleep(rng.uniform(0.15, 0.6))
            if kill == 1:  # once it has had some submissions acknowledged
                assert victim_lines.wait_for(lambda lines: len(lines) >= victim_target)
                victim.kill()
                assert victim.wait(10) == -signal.SIGKILL
            assert daemon.proc.poll() is None, daemon.log()
            daemon.signal(signal.SIGKILL)
            assert daemon.wait(10) == -signal.SIGKILL
        acks: dict[int, str] = {}
        for proc in submitters:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
            got = acknowledged(out.decode())
            assert len(got) == 50
            assert not set(got) & set(acks), "one id given to two submissions"
            acks.update(got)
        victim_lines.join()
        victim.communicate()
        victim_acks = acknowledged("".join(victim_lines.read()))
        assert len(victim_acks) >= victim_target
        assert not set(victim_acks) & set(acks), "one id given to two submissions"
        acks.update(victim_acks)

        last = start_daemon(emu.url, *DAEMON_ARGS, "--drain", wait=False)
        wait_drained(last, 120)
    finally:
        emu.stop()

    jobs = read_jobs(data_dir)
    sent = prompts_sent(emu)
    print(f"\nsubmit-under-kill: acknowledged={len(acks)} (victim {len(victim_acks)}) "
          f"stored={len(jobs)} requests={sum(sent.values())} "
          f"duplicated_executions={sum(c - 1 for c in sent.values() if c > 1)}")
    # Ids are handed out in commit order, so the committed ones are exactly 1..n; at most
    # the victim's last commit can lack its acknowledgement.
    assert sorted(jobs) == list(range(1, len(jobs) + 1))
    assert len(acks) <= len(jobs) <= len(acks) + 1
    clean = clean_answers([p for _, p, _ in jobs.values()])
    for job_id, prompt in acks.items():
        job, stored_prompt, result = jobs[job_id]
        assert stored_prompt == prompt, (job_id, stored_prompt, prompt)
    for job, prompt, result in jobs.values():
        assert job.status is JobStatus.COMPLETED, job
        assert result is not None and result["response"] == clean[prompt], (job.id, result)
        assert 1 <= sent[prompt] <= job.attempts
    check_invariants(data_dir)
