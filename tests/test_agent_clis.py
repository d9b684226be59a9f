"""The real coding agents, unmodified, through the daemon: Claude Code (`claude -p`) and Codex CLI
(`codex exec`), each against an Anthropic-, OpenAI- and Ollama-type upstream, with a shell tool
call round trip. Each session runs in a private network namespace (`unshare -n`, loopback only:
the agents reach nothing but the daemon); see `agent_scenario.py`.

The CLIs are the npm packages pinned in `tests/agents/package.json`, installed there by `.ci/run`
(or by the first test here when they are missing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agent_scenario import AGENTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = Path(__file__).resolve().parent / "agents"
SCENARIO_TIMEOUT_S = 200


@pytest.fixture(scope="module")
def installed() -> Path:
    """The pinned CLIs, installed with npm when they are not yet there."""
    if not all((AGENTS / name).exists() for name in ("claude", "codex")):
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the agent CLIs (tests/agents/package.json)"
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
            cwd=PACKAGES,
            check=True,
            timeout=600,
            capture_output=True,
        )
    return AGENTS


def session(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one agent session in a new network namespace (a user namespace too when not root)."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
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
        }
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
        {"agent": "codex", "upstream": upstream, "prompt": "Add hello.txt.", "tool": "patch"}
    )
    assert result["rc"] == 0, report(result)
    assert result["patched"] == "hello from patch\n", report(result)
    first, second = result["seen"]
    offered = json.dumps(first["body"]["tools"])
    assert "apply_patch" in offered and "begin_patch" in offered  # the grammar, described
    assert "Success" in json.dumps(second["body"])  # Codex's own report went back upstream
