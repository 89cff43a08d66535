"""The daemon: its loop and tick (`loop.py`), the scheduler's pure policy, the backend pool,
attempt outcomes, and its events and log. Its records and liveness are the store's
(`Engine.register`, `Engine.daemon_lock`)."""
