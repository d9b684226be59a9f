"""`pirouter service`: the unit and plist it writes, the key file, dry runs and refusals."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py import service
from pirouter_py.cli import app
from pirouter_py.errors import PirouterError
from tests.conftest import need

EXE = ("/opt/pirouter/bin/pirouter",)


def where(home: Path, config: Path | None) -> service.Where:
    return service.Where(home, config, home / ".config" / "pirouter", home / "logs", 1000)


def test_systemd_install_writes_the_unit_and_a_private_key_file(tmp_path: Path) -> None:
    w = where(tmp_path, tmp_path / ".config" / "pirouter" / "config.toml")
    plan = service.install_plan("systemd", w, EXE)
    assert service.apply(plan, run_commands=False) == (
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable --now pirouter.service",
            "systemctl --user restart pirouter.service",
        ],
        [],
    )
    unit = (tmp_path / ".config" / "systemd" / "user" / "pirouter.service").read_text()
    assert (f"ExecStart=/opt/pirouter/bin/pirouter --config {w.config} run") in unit
    assert f"EnvironmentFile=-{w.env_file}" in unit and "Restart=on-failure" in unit
    assert stat.S_IMODE(w.env_file.stat().st_mode) == 0o600
    w.env_file.write_text("OPENAI_API_KEY=sk-mine\n")
    service.apply(plan, run_commands=False)  # reinstalling keeps the user's keys
    assert w.env_file.read_text() == "OPENAI_API_KEY=sk-mine\n"


@need("systemd-analyze", shutil.which("systemd-analyze"), "apt-get install systemd")
def test_the_unit_verifies(tmp_path: Path) -> None:
    w = where(tmp_path, None)
    service.apply(
        service.install_plan("systemd", w, (shutil.which("true") or "/bin/true",)),
        run_commands=False,
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(w.unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_launchd_plist(tmp_path: Path) -> None:
    w = where(tmp_path, tmp_path / "my config.toml")
    plan = service.install_plan("launchd", w, EXE)
    service.apply(plan, run_commands=False)
    agent = plistlib.loads(
        (tmp_path / "Library" / "LaunchAgents" / "dev.pirouter.plist").read_bytes()
    )
    assert agent["Label"] == "dev.pirouter" and agent["RunAtLoad"] and agent["KeepAlive"]
    assert agent["StandardErrorPath"] == str(tmp_path / "logs" / "pirouter.log")
    program, flag, command = agent["ProgramArguments"]
    assert (program, flag) == ("/bin/sh", "-c")
    assert f". {w.env_file}" in command  # the keys come from the environment file
    assert command.endswith(
        f"exec /opt/pirouter/bin/pirouter --config '{tmp_path}/my config.toml' run"
    )
    assert plan.commands[-1] == ("launchctl", "bootstrap", "gui/1000", str(w.plist))


def test_uninstall_removes_the_unit_and_keeps_the_keys(tmp_path: Path) -> None:
    w = where(tmp_path, None)
    service.apply(service.install_plan("systemd", w, EXE), run_commands=False)
    service.apply(service.uninstall_plan("systemd", w), run_commands=False)
    assert not w.unit.exists() and w.env_file.exists()


def test_without_a_config_file_the_service_runs_on_the_default(tmp_path: Path) -> None:
    plan = service.install_plan("systemd", where(tmp_path, None), EXE)
    assert "ExecStart=/opt/pirouter/bin/pirouter run" in plan.files[0].content
    assert plan.notes[0].startswith("no config file yet")


def test_unsupported_platforms_are_refused() -> None:
    assert service.kind_for("linux") == "systemd" and service.kind_for("darwin") == "launchd"
    with pytest.raises(PirouterError, match=r"supports Linux .* and macOS .*, not win32"):
        service.kind_for("win32")


def test_cli_dry_run_changes_nothing(
    isolated_env: Path, write_config: Callable[[str], Path]
) -> None:
    config = write_config('[providers.ollama]\n[models.m]\nprovider = "ollama"\nmodel_id = "x"\n')
    result = CliRunner().invoke(app, ["service", "install", "--dry-run", "-c", str(config)])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"systemd user unit {isolated_env}/.config/systemd/user/")
    assert f"--config {config} run" in result.stdout
    assert "run: systemctl --user enable --now pirouter.service" in result.stdout
    assert not (isolated_env / ".config" / "systemd").exists()
    removal = CliRunner().invoke(app, ["service", "uninstall", "--dry-run", "-c", str(config)])
    assert "run: systemctl --user disable --now pirouter.service" in removal.stdout


def test_cli_refuses_to_install_a_broken_config(write_config: Callable[[str], Path]) -> None:
    config = write_config("[models\n")
    result = CliRunner().invoke(app, ["service", "install", "--dry-run", "-c", str(config)])
    assert result.exit_code == 3 and "TOML syntax error" in result.stderr


def test_the_key_file_names_the_variables_the_config_reads(tmp_path: Path) -> None:
    w = where(tmp_path, tmp_path / ".config" / "pirouter" / "config.toml")
    service.apply(
        service.install_plan("systemd", w, EXE, ("GROQ_API_KEY", "PIROUTER_CLIENT_KEY")),
        run_commands=False,
    )
    text = w.env_file.read_text()
    assert "# GROQ_API_KEY=...\n# PIROUTER_CLIENT_KEY=...\n" in text
    assert "OPENAI_API_KEY" not in text and "ANTHROPIC_API_KEY" not in text
    # a config that names none gets the usual two
    other = where(tmp_path / "other", None)
    service.apply(service.install_plan("systemd", other, EXE), run_commands=False)
    assert "# OPENAI_API_KEY=...\n# ANTHROPIC_API_KEY=...\n" in other.env_file.read_text()


def test_install_says_so_when_the_service_manager_refuses(
    isolated_env: Path, write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No user session bus (a container, ssh without lingering): systemctl fails, and install
    says the service is not running and what to do, with exit 1 — not "installed"."""
    fake_bin = isolated_env / "bin"
    fake_bin.mkdir()
    systemctl = fake_bin / "systemctl"
    systemctl.write_text(
        "#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n"
    )
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    config = write_config('[providers.ollama]\n[models.m]\nprovider = "ollama"\nmodel_id = "x"\n')
    result = CliRunner().invoke(app, ["service", "install", "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert "installed" not in result.stdout
    assert "the service is not running" in result.stderr
    assert "`systemctl --user daemon-reload` exited 1: Failed to connect to bus" in result.stderr
    assert "loginctl enable-linger" in result.stderr
    assert (isolated_env / ".config" / "systemd" / "user" / "pirouter.service").exists()
