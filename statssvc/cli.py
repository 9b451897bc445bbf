"""Command-line entry points (registered on the `tollgate` command)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands; each sets `run=handler(args) -> int` as its default."""
