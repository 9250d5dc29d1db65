"""Editions and their delivery: the lifecycle (plan, open, ledger, finish, pause,
discard), the sender that works through the ledger, local-time waves, and the reports
on editions."""
