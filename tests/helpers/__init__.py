"""Scaffolding shared by the tests, so that no test module imports another (and conftest.py
holds fixtures only):

- `cli`: the real CLI, in a new process or in this one, and what a command answered.
- `jobs`: job specs and records built (`make_spec`, `make_job`), submitted (`submit_spec`)
  and read back (`read_job`).
- `daemon`: the daemon in this process, drained (`drain`) or ticked once (`tick_once`).
- `backend`: what the emulator was asked (`generation_requests`), what a fault-free one
  answers (`clean_answers`).
- `processes`: a daemon in its own process, Python snippets run as other processes (the
  submitter, the stuck writer), pipes read line by line, a free port.
- `invariants`: `check_invariants`, the store sound as `queue/doctor.py` sees it."""
