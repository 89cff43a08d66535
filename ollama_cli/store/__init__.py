"""The store: where jobs, results, the cache and daemon records live, behind one interface.

`lmdb.py` is the embedded engine (one environment in the data dir); `keys.py` and
`tables.py` are shared by every engine."""
