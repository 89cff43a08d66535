"""The daemon: its loop and tick (`loop.py`), the scheduler's pure policy, the backend pool, attempt outcomes and daemon records."""
