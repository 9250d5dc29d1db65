"""Delivery: ``editions`` (the lifecycle: plan, open with its ledger, finish, pause,
reopen, discard, reports), ``sender`` (the engine, over a Ledger and a Transport),
``runner`` (the one place that decides what is due, for send, worker and the scheduler)
and ``timing`` (cron slots and local-time waves)."""
