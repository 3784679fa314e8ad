"""The `router` command line. Thin: each subcommand lives in router/commands/<name>.py."""
from __future__ import annotations

import importlib
from typing import Any

import click

from .errors import ConfigError, RouterError

# subcommand -> module in router.commands exposing `command`
COMMANDS = {
    "run": "run",
    "api": "api",
    "worker": "worker",
    "check": "check",
    "messages": "messages",
    "dlq": "dlq",
    "db": "db",
    "try": "try_",
    "test": "test_",
    "components": "components",
    "audit": "audit",
    "apikey": "apikey",
    "send": "send",
    "bench": "bench",
    "prune": "prune",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(f"router.commands.{module}").command  # type: ignore[no-any-return]

    def invoke(self, ctx: click.Context) -> Any:
        """Engine errors end a command with their message and exit status 1, never a traceback."""
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for p in exc.problems:
                click.echo(str(p), err=True)
            raise SystemExit(2) from None
        except RouterError as exc:
            click.echo(f"router: {exc}", err=True)
            raise SystemExit(1) from None
        except Exception as exc:
            import sqlalchemy.exc

            if isinstance(exc, sqlalchemy.exc.OperationalError):
                reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                click.echo(f"router: database unavailable: {reason}", err=True)
                raise SystemExit(1) from None
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hl7-router")
def main(**_: Any) -> None:
    """HL7 v2 / FHIR integration and message-routing engine."""


if __name__ == "__main__":
    main()
