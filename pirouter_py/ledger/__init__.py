"""The ledger: every request and attempt, in SQLite."""
