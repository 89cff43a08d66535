"""PostgreSQL: the store on a server that daemons and submitters on many hosts share.

`connection.py` turns a postgresql:// URL into connections (the driver is an optional
extra, imported only here); `schema.py` is the tables and their migrations. Nothing in
this package is imported on the LMDB path."""
