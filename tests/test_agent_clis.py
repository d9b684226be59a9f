"""The real coding agents, unmodified, through the daemon: Claude Code (`claude -p`) and Codex CLI
(`codex exec`), each against an Anthropic-, OpenAI- and Ollama-type upstream, with a shell tool
call round trip; Claude Code writing a file and reading it back through an Ollama-type upstream
(whose tool calls carry no ids); Continue's CLI (`cn -p`) on the config.yaml `pirouter agents
continue` prints. Each session runs in a private network namespace (`unshare -n`, loopback only:
the agents reach nothing but the daemon); see `agent_scenario.py`.

The CLIs are the npm packages pinned in `tests/agents/package.json`, installed there by
`tests/agents/install.sh` (`.ci/run` runs it); without them these tests skip.
`PIROUTER_AGENTS_BIN` names another directory of `claude` and `codex` executables:
`bench/agents_latest.py` runs these tests on the newest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import agent_scenario
from tests.agent_scenario import NOTE
from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_TIMEOUT_S = 200
BIN_VARIABLE = "PIROUTER_AGENTS_BIN"  # claude and codex from elsewhere (bench/agents_latest.py)
PINNED = agent_scenario.installed()
pytestmark = need("the agent CLIs", PINNED, agent_scenario.INSTALL)


@pytest.fixture(scope="module")
def installed() -> Path:
    """Where `claude` and `codex` are: the pinned ones, or $PIROUTER_AGENTS_BIN."""
    assert PINNED is not None  # the module is skipped without them
    return Path(os.environ.get(BIN_VARIABLE) or PINNED)


def session(spec: dict[str, Any], bin: Path | None = None) -> dict[str, Any]:
    """Run one agent session in a new network namespace (a user namespace too when not root)."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    spec = {**spec, "bin": str(bin) if bin else None}
    done = subprocess.run(
        [*unshare, sys.executable, "-m", "tests.agent_scenario", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def report(result: dict[str, Any]) -> str:
    return "\n".join((result["stdout"][-1500:], result["stderr"], result["daemon_stderr"]))


@pytest.mark.parametrize("upstream", ["anthropic", "openai", "ollama"])
@pytest.mark.parametrize("agent", ["claude", "codex"])
def test_an_agent_runs_a_tool_and_answers_through_pirouter(
    installed: Path, agent: str, upstream: str
) -> None:
    result = session(
        {
            "agent": agent,
            "upstream": upstream,
            "prompt": "Run `echo hi-from-tool` in the shell, then say DONE.",
            "tool": "shell",
        },
        installed,
    )
    assert result["rc"] == 0, report(result)
    assert "DONE after tool" in result["stdout"], report(result)
    first, second = result["seen"]  # the tool call, then the answer to its output
    path = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions", "ollama": "/api/chat"}
    assert first["path"] == second["path"] == path[upstream]
    assert "hi-from-tool" in json.dumps(second["body"])  # the tool's output went back upstream
    protocol = "anthropic" if agent == "claude" else "responses"
    assert [r["protocol"] for r in result["requests"]] == [protocol, protocol]
    assert all(r["status"] == "ok" for r in result["requests"])
    if agent == "claude" and upstream != "anthropic":
        # Claude Code's per-request billing line stays out of other upstreams' prompts
        assert "x-anthropic-billing-header" not in json.dumps(first["body"])
    if agent == "claude" and upstream == "anthropic":
        assert "claude-code" in first["headers"].get("anthropic-beta", "")


@pytest.mark.parametrize("upstream", ["openai", "ollama"])
def test_codex_applies_a_patch_a_chat_model_wrote(installed: Path, upstream: str) -> None:
    """Codex's apply_patch is a free-form custom tool: a chat model gets it as a function of one
    string, and Codex gets the call back as its custom tool call, and applies the patch."""
    result = session(
        {"agent": "codex", "upstream": upstream, "prompt": "Add hello.txt.", "tool": "patch"},
        installed,
    )
    assert result["rc"] == 0, report(result)
    assert result["patched"] == "hello from patch\n", report(result)
    first, second = result["seen"]
    offered = json.dumps(first["body"]["tools"])
    assert "apply_patch" in offered and "begin_patch" in offered  # the grammar, described
    assert "Success" in json.dumps(second["body"])  # Codex's own report went back upstream


def test_claude_code_writes_then_reads_back_through_an_ollama_upstream(installed: Path) -> None:
    """Ollama gives its tool calls no ids: two in one conversation must still be two calls to
    Claude Code, or it ends the turn with `[Tool use interrupted]` instead of running the second.
    The model writes a file (Write), reads it back next round (Read), then answers quoting it."""
    result = session(
        {
            "agent": "claude",
            "upstream": "ollama",
            "prompt": "Write the note to note.txt, read it back, and tell me what it says.",
            "tool": "write-read",
        },
        installed,
    )
    everything = json.dumps(result)
    assert "Tool use interrupted" not in everything, report(result)
    assert result["files"].get("note.txt") == NOTE + "\n", report(result)  # Write ran
    assert [s["path"] for s in result["seen"]] == ["/api/chat"] * 3, report(result)
    # the Read ran: its result, the file's content, reached the upstream in the third request
    last = result["seen"][2]["body"]["messages"][-1]
    assert last["role"] == "tool" and NOTE in json.dumps(last), report(result)
    assert result["rc"] == 0, report(result)
    assert f"The note says: {NOTE}" in json.loads(result["stdout"])["result"], report(result)


def test_continue_answers_through_pirouter_on_the_printed_config() -> None:
    """`cn -p` on the ~/.continue/config.yaml `pirouter agents continue --whole` prints."""
    result = session(
        {"agent": "continue", "upstream": "openai", "prompt": "Say PONG.", "tool": None}
    )
    assert "Failed to parse config" not in result["stdout"] + result["stderr"], report(result)
    assert result["rc"] == 0, report(result)
    assert "PONG" in result["stdout"], report(result)
    (seen,) = result["seen"]
    assert seen["path"] == "/v1/chat/completions"
    assert [r["protocol"] for r in result["requests"]] == ["openai"]
