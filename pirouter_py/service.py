"""Running pirouter as a user service: a systemd user unit (Linux) or a LaunchAgent (macOS).

A `Plan` is everything an operation would do, the files it writes and the commands it runs, built
by pure functions (paths and platform are parameters, so both platforms are testable anywhere).
`apply()` carries a plan out; `--dry-run` only shows it. API keys live in an environment file
beside the config, created with mode 0600, never in the unit or the plist.
"""

from __future__ import annotations

import plistlib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pirouter_py.errors import PirouterError

UNIT = "pirouter.service"
LABEL = "dev.pirouter"
ENV_FILE = "pirouter.env"
ENV_TEMPLATE = """\
# API keys for the pirouter service, one NAME=value per line. Read when the service starts;
# keep this file private (mode 0600). Then: pirouter service install (or restart the service).
"""
DEFAULT_KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def env_template(key_vars: tuple[str, ...] = ()) -> str:
    """The env file's first text: a commented line for each key variable the config names
    (the usual two when it names none)."""
    return ENV_TEMPLATE + "".join(f"# {name}=...\n" for name in key_vars or DEFAULT_KEY_VARS)


@dataclass(frozen=True, slots=True)
class File:
    path: Path
    content: str
    mode: int = 0o644
    keep_existing: bool = False  # e.g. the env file: created once, never overwritten


@dataclass(frozen=True, slots=True)
class Plan:
    summary: str
    files: tuple[File, ...] = ()
    remove: tuple[Path, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def kind_for(platform: str = sys.platform) -> str:
    if platform.startswith("linux"):
        return "systemd"
    if platform == "darwin":
        return "launchd"
    raise PirouterError(
        f"`pirouter service` supports Linux (systemd) and macOS (launchd), not "
        f"{platform}; run `pirouter run` under your own supervisor instead"
    )


def program() -> tuple[str, ...]:
    """How to start this pirouter: its console script, else this Python with -m."""
    beside = Path(sys.executable).parent / "pirouter"
    script = str(beside) if beside.exists() else shutil.which("pirouter")
    if script:
        return (str(Path(script).absolute()),)
    return (sys.executable, "-m", "pirouter_py")


def run_args(exe: tuple[str, ...], config: Path | None) -> tuple[str, ...]:
    return (*exe, *(("--config", str(config)) if config is not None else ()), "run")


def systemd_unit(exe: tuple[str, ...], config: Path | None, env_file: Path) -> str:
    return f"""\
[Unit]
Description=pirouter, the local LLM routing daemon
After=network-online.target

[Service]
Type=exec
ExecStart={shlex.join(run_args(exe, config))}
EnvironmentFile=-{env_file}
Restart=on-failure
RestartSec=2
TimeoutStopSec=20

[Install]
WantedBy=default.target
"""


def launchd_plist(exe: tuple[str, ...], config: Path | None, env_file: Path, log_dir: Path) -> str:
    command = (
        f"set -a; [ -f {shlex.quote(str(env_file))} ] && . {shlex.quote(str(env_file))}; "
        f"exec {shlex.join(run_args(exe, config))}"
    )
    return plistlib.dumps(
        {
            "Label": LABEL,
            "ProgramArguments": ["/bin/sh", "-c", command],
            "RunAtLoad": True,
            "KeepAlive": True,
            "StandardOutPath": str(log_dir / "pirouter.log"),
            "StandardErrorPath": str(log_dir / "pirouter.log"),
        }
    ).decode()


@dataclass(frozen=True, slots=True)
class Where:
    """The paths a service uses, resolved for one user."""

    home: Path
    config: Path | None  # the config file to run with; None: the built-in default
    config_dir: Path
    log_dir: Path
    uid: int

    @property
    def env_file(self) -> Path:
        return self.config_dir / ENV_FILE

    @property
    def unit(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / UNIT

    @property
    def plist(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def install_plan(
    kind: str, where: Where, exe: tuple[str, ...], key_vars: tuple[str, ...] = ()
) -> Plan:
    """`key_vars`: the variables the config reads keys from, written commented into a new env
    file."""
    env = File(where.env_file, env_template(key_vars), 0o600, keep_existing=True)
    notes = (
        ()
        if where.config is not None
        else (
            "no config file yet: the service runs on the built-in default until you create "
            f"{where.config_dir / 'config.toml'} (then: pirouter service install)",
        )
    )
    if kind == "systemd":
        return Plan(
            f"systemd user unit {where.unit}",
            (File(where.unit, systemd_unit(exe, where.config, where.env_file)), env),
            commands=(
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "--now", UNIT),
                ("systemctl", "--user", "restart", UNIT),
            ),
            notes=notes,
        )
    domain = f"gui/{where.uid}"
    return Plan(
        f"LaunchAgent {where.plist}",
        (File(where.plist, launchd_plist(exe, where.config, where.env_file, where.log_dir)), env),
        commands=(
            ("launchctl", "bootout", f"{domain}/{LABEL}"),
            ("launchctl", "bootstrap", domain, str(where.plist)),
        ),
        notes=(*notes, f"logs: {where.log_dir / 'pirouter.log'}"),
    )


def uninstall_plan(kind: str, where: Where) -> Plan:
    if kind == "systemd":
        return Plan(
            f"remove systemd user unit {where.unit}",
            remove=(where.unit,),
            commands=(
                ("systemctl", "--user", "disable", "--now", UNIT),
                ("systemctl", "--user", "daemon-reload"),
            ),
            notes=(f"kept {where.env_file} (your keys)",),
        )
    return Plan(
        f"remove LaunchAgent {where.plist}",
        remove=(where.plist,),
        commands=(("launchctl", "bootout", f"gui/{where.uid}/{LABEL}"),),
        notes=(f"kept {where.env_file} (your keys)",),
    )


def status_command(kind: str, where: Where) -> tuple[str, ...]:
    if kind == "systemd":
        return ("systemctl", "--user", "status", "--no-pager", UNIT)
    return ("launchctl", "print", f"gui/{where.uid}/{LABEL}")


def logs_command(kind: str, where: Where, follow: bool) -> tuple[str, ...]:
    if kind == "systemd":
        return ("journalctl", "--user", "-u", UNIT, "--no-pager", *(("-f",) if follow else ()))
    return ("tail", *(("-f",) if follow else ("-n", "200")), str(where.log_dir / "pirouter.log"))


def describe(plan: Plan) -> str:
    """A plan as text: what --dry-run prints, and what install reports."""
    lines = [plan.summary]
    for f in plan.files:
        keep = " (only if missing)" if f.keep_existing else ""
        lines += [f"--- {f.path} (mode {f.mode:o}){keep}", f.content.rstrip(), "---"]
    lines += [f"remove {p}" for p in plan.remove]
    lines += ["run: " + shlex.join(c) for c in plan.commands]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Failed:
    """A service-manager command that ran and failed (no user systemd session, say)."""

    command: str
    code: int
    output: str


def apply(plan: Plan, *, run_commands: bool = True) -> tuple[list[str], list[Failed]]:
    """Write, remove and run what the plan says; returns the commands that did not run (not
    found here) and those that failed, with their exit code and what they said."""
    for f in plan.files:
        if f.keep_existing and f.path.exists():
            continue
        f.path.parent.mkdir(parents=True, exist_ok=True)
        f.path.write_text(f.content, encoding="utf-8")
        f.path.chmod(f.mode)
    for path in plan.remove:
        path.unlink(missing_ok=True)
    skipped: list[str] = []
    failed: list[Failed] = []
    for command in plan.commands:
        if not run_commands or shutil.which(command[0]) is None:
            skipped.append(shlex.join(command))
            continue
        try:
            done = subprocess.run(command, check=False, timeout=60, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            failed.append(Failed(shlex.join(command), -1, "no answer within 60 s"))
            continue
        if done.returncode:
            said = (done.stderr or done.stdout).strip()
            failed.append(Failed(shlex.join(command), done.returncode, said))
    return skipped, failed
