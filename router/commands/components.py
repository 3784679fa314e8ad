"""`router components`: the registered sources, filters, mappings and destinations with their options."""
from __future__ import annotations

import click

from ..config.reference import components_markdown, components_text
from ..errors import ConfigError
from ..registry import Registry


@click.command("components")
@click.option("--markdown", is_flag=True, help="print the reference as markdown (as in docs/routes.md)")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="also load this plugin module (as settings.plugins does); repeatable")
def command(markdown: bool, plugins: tuple[str, ...]) -> None:
    """List every component type usable in routes.yaml and its options.

    Built-in components, those of installed plugins (entry points) and those of --plugin modules.
    """
    try:
        registry = Registry(plugins=plugins)
    except ConfigError as exc:
        raise click.UsageError(exc.problems[0].message) from None
    click.echo(components_markdown(registry) if markdown else components_text(registry), nl=False)
