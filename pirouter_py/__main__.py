"""`pirouter` and `python -m pirouter_py`: the command line. `--version` is answered here, before
any command module (Typer, pydantic) is imported."""

import sys


def main() -> None:
    """Console entry point."""
    if sys.argv[1:] in (["--version"], ["-V"]):  # the one answer that needs no command
        from pirouter_py import __version__

        sys.stdout.write(f"pirouter {__version__}\n")
        return
    from pirouter_py.cli import main as command_line

    command_line()


if __name__ == "__main__":
    main()
