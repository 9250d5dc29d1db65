"""The store: the database and the only code that builds SQL.

``models`` (the tables), ``db`` (engine, pragmas, schema check and upgrade),
``migrations/`` (Alembic), ``ledger`` (the Store, the delivery ledger and its claims).
"""
