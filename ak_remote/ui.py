"""All terminal output: data on stdout, progress and hints on stderr (so pipes get only data)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import click


def data(text: str) -> None:
    """Print data (ids, tables) to stdout."""
    click.echo(text)


def as_json(obj: Any) -> None:
    """Print `obj` as indented JSON to stdout (dataclasses as their fields, so commands pass
    the library's result objects as they are)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=_plain))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def info(text: str) -> None:
    """Print progress or context to stderr."""
    click.echo(text, err=True)


def warn(text: str) -> None:
    click.echo(click.style(f"Warning: {text}", fg="yellow"), err=True)


def next_steps(lines: Iterable[str]) -> None:
    """Print a 'what to do next' block to stderr."""
    items = list(lines)
    if items:
        click.echo("\nNext steps:", err=True)
        for line in items:
            click.echo(f"  {line}", err=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else str(c) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
