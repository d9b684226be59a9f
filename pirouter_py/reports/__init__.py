"""Reports over ledger rows: pure aggregation and its renderings."""
