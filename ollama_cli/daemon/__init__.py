"""The daemon: its loop and tick (`loop.py`), the scheduler's pure policy, the backend pool and attempt outcomes. Its records and liveness are the store's (`Engine.register`, `daemon_lock`)."""
