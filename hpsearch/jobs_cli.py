"""Cluster commands of the ``hpsearch`` CLI (submit, jobs, logs, stop, pull).

Registered by ``hpsearch.cli.build_parser``; Ray is imported only inside the
command functions so that ``hpsearch --help`` stays fast.
"""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the cluster subcommands to the ``hpsearch`` parser."""
