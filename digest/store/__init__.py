"""The store: the database and the only code that builds SQL.

``models`` (the tables), ``db`` (the Store: engine, session factories, pragmas, schema
check and upgrade), ``migrations/`` (Alembic), and one module of queries per aggregate:
``articles``, ``editions``, ``ledger`` (the delivery Ledger and its claims), ``locks``
(the one place that knows lock numbers and dialects), and the audience's and ingest's.
"""
