"""The routing decision: pure functions, no I/O."""
