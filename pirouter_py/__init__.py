"""pirouter: a local LLM routing daemon.

One local endpoint for every agent and tool; each request goes to the cheapest model likely to do
the job well, escalates when an answer fails, and is recorded in a SQLite ledger.
"""

__version__ = "0.1.0"
