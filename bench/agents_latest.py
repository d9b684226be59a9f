"""The newest Claude Code and Codex CLI through pirouter: the pinned ones' sessions, on `@latest`.

`python bench/agents_latest.py` installs `@anthropic-ai/claude-code@latest` and
`@openai/codex@latest` with npm into a temporary directory, runs the Claude Code and Codex
sessions of `tests/test_agent_clis.py` against them (each in its own network namespace, as the
tests do: `tests/agent_scenario.py` takes the agents' bin directory from `PIROUTER_AGENTS_BIN`),
prints one row per session with the versions tried beside the pinned ones, and exits 1 if any
session failed (2 if npm or the run itself could not finish). Run it before a release; when it
passes, bump the pins in `tests/agents/package.json`.

Everything is bounded: npm has `NPM_TIMEOUT_S`, the sessions `--timeout` seconds in all (each
session also has its own limit in the tests); past it the run is stopped, its process group
killed, and the sessions not reported count as failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PINNED = ROOT / "tests" / "agents" / "package.json"
PACKAGES = ("@anthropic-ai/claude-code", "@openai/codex")
NPM_TIMEOUT_S = 600
RUN_TIMEOUT_S = 1800  # nine sessions of up to 200 s each would fit; they take ~20 s each
# the sessions that run the CLIs given in PIROUTER_AGENTS_BIN (Continue's stays pinned)
SELECTION = "an_agent_runs or codex_applies or claude_code_writes"


def run(command: list[str], timeout: float, **kwargs: Any) -> int | None:
    """The command's exit code, or None when it ran past `timeout` (its process group killed)."""
    proc = subprocess.Popen(command, start_new_session=True, **kwargs)
    try:
        return int(proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # npm's and pytest's children go with them
        proc.wait()
        return None


def versions(node_modules: Path) -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        manifest = node_modules / name / "package.json"
        out[name] = json.loads(manifest.read_text())["version"] if manifest.exists() else "-"
    return out


def results(junit: Path) -> list[tuple[str, str, str]]:
    """(session, outcome, first line of the failure) for each test pytest reported."""
    if not junit.exists():
        return []
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "?").removeprefix("test_")
        problem = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if problem is None:
            rows.append((name, "pass", ""))
            continue
        outcome = {"failure": "FAIL", "error": "ERROR", "skipped": "skip"}[problem.tag]
        message = (problem.get("message") or problem.text or "").strip().splitlines()
        rows.append((name, outcome, message[0][:100] if message else ""))
    return rows


def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT_S, help="seconds for all sessions"
    )
    args = parser.parse_args()
    pinned = json.loads(PINNED.read_text())["dependencies"]
    with tempfile.TemporaryDirectory(prefix="pirouter-agents-latest-") as tmp:
        where = Path(tmp)
        (where / "package.json").write_text('{"private": true}\n')
        print(f"npm install {' '.join(p + '@latest' for p in PACKAGES)} ...", flush=True)
        npm = ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"]
        code = run([*npm, *(f"{p}@latest" for p in PACKAGES)], NPM_TIMEOUT_S, cwd=where)
        found = versions(where / "node_modules")
        if code != 0 or "-" in found.values():
            print(f"error: npm install did not finish (exit {code}): {found}", file=sys.stderr)
            return 2
        print(
            table([("package", "latest", "pinned")] + [(p, v, pinned[p]) for p, v in found.items()])
        )
        print(flush=True)
        junit = where / "results.xml"
        env = {**os.environ, "PIROUTER_AGENTS_BIN": str(where / "node_modules" / ".bin")}
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", SELECTION]
        pytest += [f"--junitxml={junit}", "tests/test_agent_clis.py"]
        code = run(pytest, args.timeout, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        rows = results(junit)
        print(table([("session", "result", "why")] + (rows or [("(none reported)", "FAIL", "")])))
        if code is None:
            print(f"\nstopped after {args.timeout:.0f} s", file=sys.stderr)
            return 2
        failed = not rows or any(outcome not in ("pass", "skip") for _, outcome, _ in rows)
        verdict = (
            "FAIL: keep the pins" if failed else "pass: bump the pins in tests/agents/package.json"
        )
        print(f"\n{verdict} ({', '.join(f'{p}@{v}' for p, v in found.items())})")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
