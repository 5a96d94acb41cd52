"""``rbr policy``: validate and summarise policy files."""

from __future__ import annotations

from pathlib import Path

import click

from rbr.cli.common import load_policy_or_default
from rbr.features import feature_spaces


@click.group("policy")
def policy_group() -> None:
    """Validate and inspect behavior policies."""


@policy_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
def check_command(path: Path | None) -> None:
    """Validate policy file PATH and print a summary (default: the built-in policy)."""
    policy = load_policy_or_default(path)
    spaces = feature_spaces(policy)
    click.echo(f"policy {policy.name!r} ({policy.format} format) is valid")
    click.echo(f"  source: {policy.source}")
    click.echo(f"  content hash: {policy.content_hash[:16]}")
    click.echo(
        f"  propositions: {len(policy.propositions)} simple, {len(policy.derived)} derived"
    )
    click.echo(f"  content categories: {len(policy.content_policy)}")
    click.echo("")
    click.echo(
        f"  {'response type':<20} {'propositions':>12} {'features':>9}  orderings"
    )
    for name, space in spaces.items():
        ordering = policy.response_types[name].ordering
        tiers = (
            " > ".join("/".join(tier) for tier in ordering) if ordering else "classes"
        )
        click.echo(
            f"  {name:<20} {len(space.propositions):>12} {space.n_features:>9}  {tiers}"
        )
