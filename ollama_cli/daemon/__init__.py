"""The daemon: its loop (`loop.py`), its one bounded step (`tick.py`), a request to a backend and
what it came to (`attempt.py`, `outcomes.py`), the scheduler's pure policy, the backend pool,
and its events and log. Its records and liveness are the store's (`Engine.register`,
`Engine.daemon_lock`)."""
