"""Finding the daemon: `status`, `dashboard` and `feedback` take --url, else the run file a live
`pirouter run` writes in the state dir (gone when it stops; a dead pid's is ignored), else the
config's [server] bind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from tests.fakes import Daemon, FakeUpstream

CONFIG = """
[server]
bind = "127.0.0.1:9"
[ledger]
path = "{ledger}"
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
"""
REFUSED = "[Errno 111] Connection refused"  # nothing listens on port 9 of loopback


@pytest.fixture
def config(fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config binding port 9 (where nothing answers); this test's commands share the daemon's
    state dir, as a user's shell and their `pirouter run` do."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(tmp_path / "l.db")))
    return path


def run_file(config: Path) -> Path:
    return config.parent / "state" / "pirouter" / "run.json"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_status_and_dashboard_find_the_running_daemon_by_its_run_file(config: Path) -> None:
    daemon = Daemon(config).start()
    try:
        port = int(daemon.url.rsplit(":", 1)[1])
        doc = json.loads(run_file(config).read_text())
        assert doc == {
            "pid": daemon.proc.pid if daemon.proc else None,
            "url": daemon.url,
            "host": "127.0.0.1",
            "port": port,
            "config": str(config),
        }
        code, out, _ = invoke("status", "-c", str(config))
        assert code == 0, out
        assert out.startswith(f"pirouter 0.1.0 is ok at {daemon.url}\n")
        code, out, _ = invoke("status", "--json", "-c", str(config))
        report = json.loads(out)
        assert (code, report["running"], report["url"], report["found_by"]) == (
            0,
            True,
            daemon.url,
            f"the run file {run_file(config)}",
        )
        assert invoke("dashboard", "--no-open", "-c", str(config)) == (0, f"{daemon.url}/\n", "")
    finally:
        assert daemon.stop() == 0
    assert not run_file(config).exists()  # a clean exit takes it away
    code, out, _ = invoke("status", "-c", str(config))
    assert (code, out) == (
        1,
        f"pirouter is not answering at http://127.0.0.1:9 ({REFUSED}; address from the "
        "config's [server] bind)\n  start it with `pirouter run`, or name its address with "
        "--url\n",
    )
    code, _, err = invoke("dashboard", "--no-open", "-c", str(config))
    assert (code, err) == (
        1,
        f"Error: pirouter is not answering at http://127.0.0.1:9/ ({REFUSED}; address from the "
        "config's [server] bind); start it with `pirouter run`, or name its address with --url\n",
    )


def test_url_wins_and_a_dead_pid_s_run_file_is_ignored(config: Path) -> None:
    daemon = Daemon(config).start()
    try:
        assert daemon.stop(9) != 0  # killed: its run file stays behind
        stale = json.loads(run_file(config).read_text())
        assert stale["url"] == daemon.url
        code, out, _ = invoke("status", "-c", str(config))
        assert code == 1 and out.startswith("pirouter is not answering at http://127.0.0.1:9 ("), (
            out
        )
        # a live process's file is believed, whatever else listens where
        other = Daemon(config).start()
        try:
            code, out, _ = invoke("status", "-c", str(config))
            assert code == 0 and out.startswith(f"pirouter 0.1.0 is ok at {other.url}\n")
            # --url first: even past a live run file
            code, out, _ = invoke("status", "--url", "http://127.0.0.1:9/", "-c", str(config))
            assert code == 1 and "address from --url" in out
            code, out, _ = invoke("status", "--url", other.url + "/", "-c", str(config))
            assert code == 0 and out.startswith(f"pirouter 0.1.0 is ok at {other.url}\n")
        finally:
            assert other.stop() == 0
    finally:
        daemon.stop()


def test_a_run_file_of_a_process_that_is_gone_is_ignored(config: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    path = run_file(config)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": int(gone.stdout), "url": "http://127.0.0.1:1"}))
    code, out, _ = invoke("status", "--json", "-c", str(config))
    assert code == 1 and json.loads(out)["found_by"] == "the config's [server] bind"
    path.write_text("not json")
    code, out, _ = invoke("status", "--json", "-c", str(config))
    assert code == 1 and json.loads(out)["url"] == "http://127.0.0.1:9"


@pytest.mark.parametrize("url", ["127.0.0.1:11435", "ftp://x", "http://"])
def test_a_url_that_is_no_address_is_a_usage_error(config: Path, url: str) -> None:
    result = CliRunner().invoke(app, ["status", "--url", url, "-c", str(config)])
    assert result.exit_code == 2
    assert f"{url!r} is not a daemon address: use e.g. http://127.0.0.1:11435" in result.output
