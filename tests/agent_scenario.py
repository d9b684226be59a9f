"""One coding-agent session, run inside a private network namespace by `test_agent_clis.py`.

`python -m tests.agent_scenario SPEC_JSON` brings loopback up, starts a fake upstream of the given
type and the real daemon (`pirouter run`) in front of it, runs the agent CLI as users run it
(`claude -p`, `codex exec`) against the daemon, and prints one JSON line: the CLI's exit code and
output, and what the upstream received. Outside a namespace of its own it refuses to run: the
CLIs would reach the internet.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.fakes import Daemon, FakeUpstream, Reply

AGENTS = Path(__file__).resolve().parent / "agents" / "node_modules" / ".bin"
UPSTREAM_MODEL = "m-up"
CLI_TIMEOUT_S = 150
CONFIG = """
[ledger]
path = "{ledger}"
[providers.up]
type = "{kind}"
base_url = "{url}"
{key}
[models.coder]
provider = "up"
model_id = "{model}"
supports_tools = true
context_window = 200000
"""


def only_loopback() -> bool:
    """True when the only network interface is `lo` (a namespace made for the test)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from patch\n*** End Patch\n"


def tool_call(agent: str, tool: str) -> dict[str, Any]:
    """A shell tool call in the agent's own tool (Claude Code's Bash, Codex's exec_command), or
    Codex's free-form apply_patch as a chat model calls it (a function of one string)."""
    if tool == "patch":
        name, arguments = "apply_patch", {"input": PATCH}
    elif agent == "claude":
        name, arguments = "Bash", {"command": "echo hi-from-tool", "description": "echo"}
    else:
        name, arguments = "exec_command", {"cmd": "echo hi-from-tool"}
    return {
        "id": "call_1",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def claude(url: str, home: Path, work: Path, prompt: str, config: Path) -> list[str]:
    env = {
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-local-unused",
        "ANTHROPIC_MODEL": "auto",
        "IS_SANDBOX": "1",  # root may skip permissions in a sandbox (this namespace)
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    os.environ.update(env)
    return [
        str(AGENTS / "claude"),
        "-p",
        prompt,
        "--output-format",
        "json",
        "--dangerously-skip-permissions",
    ]


def codex(url: str, home: Path, work: Path, prompt: str, config: Path) -> list[str]:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    catalog = codex_home / "pirouter-models.json"
    # the catalog `pirouter agents codex` writes from the installed Codex's own
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pirouter_py",
            "--config",
            str(config),
            "agents",
            "codex",
            "--catalog",
            str(catalog),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PATH": f"{AGENTS}:{os.environ['PATH']}"},
        timeout=60,
    )
    (codex_home / "config.toml").write_text(
        f"""check_for_update_on_startup = false
model_catalog_json = "{catalog}"
model = "auto"
model_provider = "pirouter"
approval_policy = "never"
sandbox_mode = "danger-full-access"

[model_providers.pirouter]
name = "pirouter"
base_url = "{url}/v1"
env_key = "PIROUTER_API_KEY"
wire_api = "responses"
supports_websockets = false
stream_max_retries = 0
request_max_retries = 0

[analytics]
enabled = false

[features]
plugins = false
apps = false
"""
    )
    os.environ.update({"HOME": str(home), "CODEX_HOME": str(codex_home), "PIROUTER_API_KEY": "k"})
    return [str(AGENTS / "codex"), "exec", "--skip-git-repo-check", prompt]


def main(spec: dict[str, Any]) -> dict[str, Any]:
    if not only_loopback():
        raise SystemExit("refusing to run outside a network namespace of its own (unshare -n)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    agent, kind = spec["agent"], spec["upstream"]
    fake = FakeUpstream()
    fake.start()
    with tempfile.TemporaryDirectory(prefix="pirouter-agent-") as tmp:
        root = Path(tmp)
        home, work = root / "home", root / "work"
        home.mkdir()
        work.mkdir()
        if spec.get("tool"):
            call = tool_call(agent, spec["tool"])
            fake.script(
                UPSTREAM_MODEL,
                Reply(text="", tool_calls=[call], finish_reason="tool_calls"),
                Reply(text="DONE after tool"),
            )
        else:
            fake.script(UPSTREAM_MODEL, Reply(text="PONG"))
        key = "" if kind == "ollama" else 'api_key = "k-up"'
        config = root / "config.toml"
        config.write_text(
            CONFIG.format(
                ledger=root / "ledger.db", kind=kind, url=fake.url, key=key, model=UPSTREAM_MODEL
            )
        )
        daemon = Daemon(config).start()
        try:
            make = claude if agent == "claude" else codex
            command = make(daemon.url, home, work, spec["prompt"], config)
            done = subprocess.run(
                command,
                cwd=work,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT_S,
                check=False,
            )
        finally:
            daemon.stop()
            fake.stop()
        requests = daemon.log_lines("request")
        made = work / "hello.txt"
        return {
            "patched": made.read_text() if made.exists() else None,
            "rc": done.returncode,
            "stdout": done.stdout,
            "stderr": done.stderr[-4000:],
            "daemon_stderr": "".join(daemon.stderr)[-4000:],
            "seen": [
                {"path": s.path, "model": s.model, "headers": s.headers, "body": s.body}
                for s in fake.seen
            ],
            "requests": [
                {k: r.get(k) for k in ("status", "protocol", "model", "attempts")} for r in requests
            ],
        }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
