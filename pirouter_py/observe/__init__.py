"""What the daemon tells its operator: metrics and the per-request log line."""
