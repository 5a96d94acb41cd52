"""The ``rbr`` command line."""

from __future__ import annotations

import logging

import click

from rbr import __version__
from rbr.cli.classifier_cmd import classify_command
from rbr.cli.common import ErrorReportingGroup
from rbr.cli.evaluate_cmd import compare_command, evaluate_command
from rbr.cli.fit_cmd import fit_command
from rbr.cli.grade_cmd import grade_command
from rbr.cli.grader_cmd import grader_group
from rbr.cli.policy_cmd import policy_group
from rbr.cli.quickstart_cmd import quickstart_command
from rbr.cli.report_cmd import report_group
from rbr.cli.score_cmd import score_command
from rbr.cli.serve_cmd import serve_command
from rbr.cli.synth_cmd import synth_command
from rbr.cli.xstest_cmd import xstest_command


@click.group(
    cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="rbr")
@click.option(
    "-v", "--verbose", count=True, help="Log more: -v for info, -vv for debug."
)
def cli(verbose: int) -> None:
    """Rule-Based Rewards: turn a safety behavior policy into an RL reward."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(policy_group)
cli.add_command(grade_command)
cli.add_command(classify_command)
cli.add_command(fit_command)
cli.add_command(score_command)
cli.add_command(quickstart_command)
cli.add_command(grader_group)
cli.add_command(synth_command)
cli.add_command(evaluate_command)
cli.add_command(compare_command)
cli.add_command(xstest_command)
cli.add_command(serve_command)
cli.add_command(report_group)


def main() -> None:
    """Run the command line (the ``rbr`` console script)."""
    cli(prog_name="rbr")


if __name__ == "__main__":
    main()
