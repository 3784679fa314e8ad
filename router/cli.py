"""The `router` command line. Thin: each subcommand lives in router/commands/<name>.py."""
from __future__ import annotations

import importlib
from typing import Any

import click

# subcommand -> module in router.commands exposing `command`
COMMANDS = {
    "run": "run",
    "worker": "worker",
    "check": "check",
    "messages": "messages",
    "dlq": "dlq",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(f"router.commands.{module}").command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hl7-router")
def main(**_: Any) -> None:
    """HL7 v2 / FHIR integration and message-routing engine."""


if __name__ == "__main__":
    main()
