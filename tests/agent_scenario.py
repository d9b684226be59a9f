"""One coding-agent session, run inside a private network namespace by `test_agent_clis.py` (and by
`bench/agents_latest.py`, against the newest releases).

`python -m tests.agent_scenario SPEC_JSON` brings loopback up, starts a fake upstream of the given
type and the real daemon (`pirouter run`) in front of it, runs the agent CLI as users run it
(`claude -p`, `codex exec`, `cn -p`) against the daemon, and prints one JSON line: the CLI's exit
code and output, and what the upstream received. Outside a namespace of its own it refuses to run:
the CLIs would reach the internet.

The spec: `agent` (claude, codex, continue), `upstream` (anthropic, openai, ollama), `prompt`,
`tool` (none; shell; patch: Codex's apply_patch; write-read: Claude Code writes a file, then reads
it back), and `bin`, the directory holding the agents' executables (default: the pinned ones in
`tests/agents`). Codex and Continue read the config files `pirouter agents` prints, as users do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.fakes import Daemon, FakeUpstream, Reply

PACKAGES = Path(__file__).resolve().parent / "agents"  # package.json pins the CLIs' versions
AGENTS = PACKAGES / "node_modules" / ".bin"
INSTALL = "bash tests/agents/install.sh (it needs Node.js and npm: apt-get install nodejs npm)"
# what `installed` checks for: the executables, and Continue's schema package (no executable)
INSTALLED = ("claude", "codex", "cn", "opencode", "../@continuedev/config-yaml/package.json")
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
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from patch\n*** End Patch\n"
NOTE = "pirouter-note-7f3a: written, then read back"  # what Claude Code writes and reads back


def installed() -> Path | None:
    """The folder of the pinned CLIs of `tests/agents/package.json`, or None until
    `tests/agents/install.sh` has installed them (never from inside the tests)."""
    ready = shutil.which("node") and all((AGENTS / name).exists() for name in INSTALLED)
    return AGENTS if ready else None


def only_loopback() -> bool:
    """True when the only network interface is `lo` (a namespace made for the test)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def call(n: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool call as the fake upstream takes it (its Ollama answers drop the id, like Ollama)."""
    return {
        "id": f"call_{n}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def replies(agent: str, tool: str, work: Path) -> list[Reply]:
    """The model's side of the session: its tool calls, one round each, then its answer.

    shell: the agent's own shell tool (Claude Code's Bash, Codex's exec_command); patch: Codex's
    free-form apply_patch as a chat model calls it (a function of one string); write-read: Claude
    Code's Write, then its Read of the same file, then an answer quoting it.
    """
    if tool == "write-read":
        note = str(work / "note.txt")
        calls = [
            call(1, "Write", {"file_path": note, "content": NOTE + "\n"}),
            call(2, "Read", {"file_path": note}),
        ]
        answer = f"The note says: {NOTE}"
    elif tool == "patch":
        calls, answer = [call(1, "apply_patch", {"input": PATCH})], "DONE after tool"
    elif agent == "claude":
        shell = {"command": "echo hi-from-tool", "description": "echo"}
        calls, answer = [call(1, "Bash", shell)], "DONE after tool"
    else:
        calls, answer = [call(1, "exec_command", {"cmd": "echo hi-from-tool"})], "DONE after tool"
    rounds = [Reply(text="", tool_calls=[c], finish_reason="tool_calls") for c in calls]
    return [*rounds, Reply(text=answer)]


def agents_file(config: Path, url: str, agent: str, path: str, *options: str) -> str:
    """One file as `pirouter agents AGENT --whole` prints it for this config, bound where the
    daemon listens (it runs on a free port, not on the config's)."""
    bound = config.with_name("bound.toml")
    bind = url.removeprefix("http://")
    bound.write_text(f'[server]\nbind = "{bind}"\n' + config.read_text())
    command = [sys.executable, "-m", "pirouter_py", "--config", str(bound), "agents", agent]
    done = subprocess.run(
        [*command, "--whole", "--json", *options],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
    )
    text: str = json.loads(done.stdout)["files"][path]
    return text


def claude(url: str, home: Path, bin: Path, prompt: str, config: Path) -> list[str]:
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
        str(bin / "claude"),
        "-p",
        prompt,
        "--output-format",
        "json",
        "--dangerously-skip-permissions",
    ]


def codex(url: str, home: Path, bin: Path, prompt: str, config: Path) -> list[str]:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    catalog = codex_home / "pirouter-models.json"
    os.environ["PATH"] = f"{bin}:{os.environ['PATH']}"  # --catalog asks the Codex on PATH
    whole = agents_file(config, url, "codex", "~/.codex/config.toml", "--catalog", str(catalog))
    (codex_home / "config.toml").write_text(whole)
    os.environ.update({"HOME": str(home), "CODEX_HOME": str(codex_home), "PIROUTER_API_KEY": "k"})
    # what a test needs beyond the printed file: no prompts, no retries, nothing fetched
    overrides = {
        "check_for_update_on_startup": "false",
        "approval_policy": '"never"',
        "sandbox_mode": '"danger-full-access"',
        "model_providers.pirouter.stream_max_retries": "0",
        "model_providers.pirouter.request_max_retries": "0",
        "analytics.enabled": "false",
        "features.plugins": "false",
        "features.apps": "false",
    }
    settings = [x for k, v in overrides.items() for x in ("-c", f"{k}={v}")]
    return [str(bin / "codex"), "exec", *settings, "--skip-git-repo-check", prompt]


def continue_(url: str, home: Path, bin: Path, prompt: str, config: Path) -> list[str]:
    """Continue's CLI on the ~/.continue/config.yaml `pirouter agents continue` prints."""
    (home / ".continue").mkdir(parents=True)
    whole = agents_file(config, url, "continue", "~/.continue/config.yaml")
    (home / ".continue" / "config.yaml").write_text(whole)
    os.environ.update({"HOME": str(home), "CONTINUE_GLOBAL_DIR": str(home / ".continue")})
    return [str(bin / "cn"), "-p", prompt, "--config", str(home / ".continue" / "config.yaml")]


def main(spec: dict[str, Any]) -> dict[str, Any]:
    if not only_loopback():
        raise SystemExit("refusing to run outside a network namespace of its own (unshare -n)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    agent, kind = spec["agent"], spec["upstream"]
    bin = Path(spec.get("bin") or AGENTS)
    fake = FakeUpstream()
    fake.start()
    with tempfile.TemporaryDirectory(prefix="pirouter-agent-") as tmp:
        root = Path(tmp)
        home, work = root / "home", root / "work"
        home.mkdir()
        work.mkdir()
        if spec.get("tool"):
            fake.script(UPSTREAM_MODEL, *replies(agent, spec["tool"], work))
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
            make = {"claude": claude, "codex": codex, "continue": continue_}[agent]
            command = make(daemon.url, home, bin, spec["prompt"], config)
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
        made = {p.name: p.read_text() for p in work.iterdir() if p.is_file()}
        return {
            "files": made,
            "patched": made.get("hello.txt"),
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
