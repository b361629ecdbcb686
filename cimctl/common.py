"""What every command module shares: how a user-caused failure is reported."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(message: str) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit 1 (no stack trace for user errors)."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)
