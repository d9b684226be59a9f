"""`python bench/dashboard_window.py [ROWS]`: the dashboard's 30-day window over a generated
ledger of ROWS requests (default 1,000,000) spread over 30 days, as JSON.

It writes the ledger (requests of four models, three rules, three clients, two protocols, one in
eight escalated, one in forty failed), rolls its hours up as the daemon's writer does, starts
`pirouter run` on it, and times `GET /ui/api/summary?window=30d` over HTTP: the first call and
the median of five more; for comparison, the time to read the same window's rows the way the
panels did before rollups (`read_requests` of every row) is measured on 100,000 of them. Every
process it starts is stopped; the ledger lives in a temporary directory.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import free_port, process  # type: ignore[import-not-found]

from pirouter_py.ledger import read, rollups, schema
from pirouter_py.ledger.rows import INSERT_ATTEMPT, INSERT_REQUEST, _insert

DAY = 86_400
CONFIG = """
[server]
admin_keys_env = ["BENCH_UI_KEY"]  # the operator: the page reads every client's rows
[ledger]
path = "{ledger}"
[providers.fake]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
[models.local]
provider = "fake"
model_id = "m-local"
quality = "basic"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "standard"
input_per_m = 0.15
output_per_m = 0.6
[models.mid]
provider = "fake"
model_id = "m-mid"
quality = "standard"
input_per_m = 1.0
output_per_m = 4.0
[models.strong]
provider = "fake"
model_id = "m-strong"
quality = "strong"
input_per_m = 3.0
output_per_m = 15.0
"""
MODELS = ("local", "cheap", "mid", "strong")
RULES = ("policy:balanced:easy", "policy:balanced:hard", "agent-tools")
AGENTS = ("claude-cli/2.1.3 (external, cli)", "codex_cli_rs/0.17.0", "python-httpx/0.28")


def generate(path: Path, n: int, now: float) -> None:
    rng = random.Random(7)
    db = schema.connect(path)
    schema.migrate(db)
    start = now - 30 * DAY + 60
    step = (30 * DAY - 120) / n
    db.execute("BEGIN")
    requests, attempts = [], []
    for i in range(n):
        ts = start + i * step
        rid = f"b{i:08d}"
        model = MODELS[rng.randrange(4)]
        failed = rng.random() < 1 / 40
        escalated = not failed and rng.random() < 1 / 8 and model != "local"
        tokens_in, tokens_out = rng.randrange(200, 20_000), rng.randrange(10, 2_000)
        latency = rng.lognormvariate(7.0, 1.0)
        chain = []
        if escalated:
            chain.append((rid, 0, "local", "fake", "m-local", "escalated_short_response"))
        final = "" if failed else model
        chain.append(
            (rid, len(chain), model, "fake", f"m-{model}", "fatal_error" if failed else "ok")
        )
        cost = 0.0 if failed else tokens_in * 1e-6 + tokens_out * 4e-6
        for a in chain:
            ok = a[5] == "ok"
            attempts.append(
                (
                    *a,
                    None,
                    None,
                    tokens_in,
                    tokens_out if ok else 0,
                    0,
                    0,
                    cost if ok else 0.0,
                    latency,
                    latency / 5,
                    int(ok),
                    None,
                )
            )
        requests.append(
            (
                rid,
                int(ts),
                "auto",
                RULES[rng.randrange(3)],
                chain[0][2],
                final,
                "[]",
                tokens_in,
                tokens_out,
                cost,
                round(latency),
                "exhausted" if failed else "ok",
                int(ts * 1000),
                ("openai", "anthropic")[i % 2],
                "easy",
                502 if failed else 200,
                1,
                0,
                0,
                latency / 5,
                0.3,
                AGENTS[rng.randrange(3)],
                None,
                None,
                None,
                None,  # no client key (a laptop's daemon)
                "{}",  # no header routing read
                None,  # no instruction key (its regenerates are not what this measures)
            )
        )
        if len(requests) == 5_000:
            _insert(db, INSERT_REQUEST, requests)
            _insert(db, INSERT_ATTEMPT, attempts)
            requests, attempts = [], []
    _insert(db, INSERT_REQUEST, requests)
    _insert(db, INSERT_ATTEMPT, attempts)
    rollups.mark(db, [start + i * 3_600 for i in range(30 * 24 + 1)])
    db.execute("COMMIT")
    db.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    out: dict[str, float] = {"rows": n}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        now = time.time()
        began = time.perf_counter()
        generate(path, n, now)
        out["generate_s"] = time.perf_counter() - began
        db = schema.connect(path)
        began = time.perf_counter()
        rollups.catch_up(db, now, budget_s=3_600)
        out["roll_up_s"] = time.perf_counter() - began
        out["rollup_rows"] = db.execute("SELECT COUNT(*) FROM rollup").fetchone()[0]
        db.close()
        ro = read.open_read_only(path)
        assert ro is not None
        began = time.perf_counter()
        read.read_requests(ro, now - 30 * DAY, 100_000)
        out["read_100k_rows_s"] = time.perf_counter() - began
        ro.close()
        config = Path(tmp) / "config.toml"
        config.write_text(CONFIG.replace("{ledger}", str(path)))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "pirouter_py", "--config", str(config), "run", "--port"]
        key = "bench-ui-key"
        env = {**os.environ, "BENCH_UI_KEY": key}
        with process([*cmd, str(port)], f"{url}/health", env=env):
            times = []
            for _ in range(6):
                ask = urllib.request.Request(
                    f"{url}/ui/api/summary?window=30d", headers={"Authorization": f"Bearer {key}"}
                )
                began = time.perf_counter()
                with urllib.request.urlopen(ask, timeout=60) as answer:
                    page = json.loads(answer.read())
                times.append(time.perf_counter() - began)
            assert page["stats"]["requests"] == n, page["stats"]["requests"]
        out["first_s"] = times[0]
        out["median_s"] = statistics.median(times[1:])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
