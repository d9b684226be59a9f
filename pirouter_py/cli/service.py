"""`pirouter service install|uninstall|status|logs`: pirouter as a systemd or launchd service.

Registered on the CLI's `app` when `cli` imports this module; `service.py` builds the plans.
"""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pirouter_py.cli.common import ConfigOption, app, fail, guard, load
from pirouter_py.errors import ExitCode

service_app = typer.Typer(
    help="Run pirouter as a user service (systemd or launchd).\n\nsystemd on Linux, launchd "
    "on macOS.",
    no_args_is_help=True,
)
app.add_typer(service_app, name="service")
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the files and commands, change nothing.")
]


def _where(ctx: typer.Context, config: Path | None) -> tuple[str, Any]:
    """The service kind for this platform and its paths, for a config that loads."""
    import os

    import platformdirs

    from pirouter_py import service

    kind = guard(service.kind_for)
    loaded = guard(lambda: load(ctx, config, warn=False))
    config_path = loaded.path.resolve() if loaded.path is not None else None
    config_dir = (
        config_path.parent
        if config_path is not None
        else (loaded.default_path or Path.home()).parent
    )
    log_dir = platformdirs.user_log_path("pirouter", appauthor=False)
    return kind, service.Where(Path.home(), config_path, config_dir, log_dir, os.getuid())


@service_app.command("install")
def service_install(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False
) -> None:
    """Install (or update) and start the service for this config."""
    from pirouter_py import service

    kind, where = _where(ctx, config)
    cfg = guard(lambda: load(ctx, config, warn=False)).config
    names = [e for p in cfg.providers.values() for e in p.key_envs] + list(cfg.server.api_keys_env)
    key_vars = tuple(dict.fromkeys(names))  # in the config's order, once each
    plan = service.install_plan(kind, where, service.program(), key_vars)
    if dry_run:
        sys.stdout.write(service.describe(plan))
        return
    skipped, failed = service.apply(plan)
    if failed:
        _failed("installed the files, but the service manager", failed, "is not running")
    sys.stdout.write(f"installed {plan.summary}\n" + "".join(f"note: {n}\n" for n in plan.notes))
    if skipped:
        sys.stdout.write(
            "run these yourself (not found here):\n" + "".join(f"  {c}\n" for c in skipped)
        )


def _failed(done: str, failed: list[Any], state: str) -> None:
    """Say which service-manager commands failed and what they said, and exit 1."""
    lines = [f"{done} refused: the service {state}"]
    for f in failed:
        said = f": {f.output.splitlines()[0]}" if f.output.strip() else ""
        lines.append(f"  `{f.command}` exited {f.code}{said}")
    if any("bus" in f.output.lower() for f in failed):
        lines.append(
            "  no user session bus here (a container, or ssh without lingering): "
            "`loginctl enable-linger $USER` and log in again, or run `pirouter run` yourself"
        )
    fail("\n".join(lines), ExitCode.RUNTIME)


@service_app.command("uninstall")
def service_uninstall(
    ctx: typer.Context, config: ConfigOption = None, dry_run: DryRunOption = False
) -> None:
    """Stop the service and remove its unit or plist.

    The key file is kept."""
    from pirouter_py import service

    kind, where = _where(ctx, config)
    plan = service.uninstall_plan(kind, where)
    if dry_run:
        sys.stdout.write(service.describe(plan))
        return
    skipped, failed = service.apply(plan)
    if failed:
        _failed("removed the files, but the service manager", failed, "may still be running")
    sys.stdout.write(
        f"removed: {plan.summary}\n" + "".join(f"  run yourself: {c}\n" for c in skipped)
    )


def _service_exec(command: tuple[str, ...]) -> None:
    import shlex
    import shutil
    import subprocess

    if shutil.which(command[0]) is None:
        fail(
            f"{command[0]} is not available here; the command would be: {shlex.join(command)}",
            ExitCode.RUNTIME,
        )
    raise typer.Exit(subprocess.run(command, check=False).returncode)


@service_app.command("status")
def service_status(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Show the service manager's view of the service."""
    from pirouter_py import service

    kind, where = _where(ctx, config)
    _service_exec(service.status_command(kind, where))


@service_app.command("logs")
def service_logs(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Show the service's log (journalctl, or the macOS log file)."""
    from pirouter_py import service

    kind, where = _where(ctx, config)
    _service_exec(service.logs_command(kind, where, follow))
