"""Fail an image build unless the interpreter holds exactly the locked versions.

Usage: python verify_lock.py LOCK_FILE [--python X.Y] [--project NAME==VERSION]

Run as the last step of each worker image build, with the image's own Python. It checks that
every `name==version` pin of the lock is installed at that version (a base image that ships a
different Keras or NumPy would otherwise win silently), that the interpreter is the one the lock
was compiled for, and that the project itself is installed. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(lock: Path) -> dict[str, str]:
    """The `name==version` pins of a pip-compile style lock, by canonical name."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(3)
    return pins


def installed_versions() -> dict[str, str]:
    """Installed distributions of this interpreter, by canonical name."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def problems(pins: dict[str, str], installed: dict[str, str], extra: dict[str, str]) -> list[str]:
    """Every difference between what is pinned and what is installed, one line each."""
    lines = []
    for name, version in sorted({**pins, **extra}.items()):
        have = installed.get(name)
        if have is None:
            lines.append(f"{name}: locked {version}, not installed")
        elif have != version:
            lines.append(f"{name}: locked {version}, installed {have}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--python", help="required X.Y of this interpreter")
    parser.add_argument(
        "--project", action="append", default=[], help="NAME==VERSION that must be installed too"
    )
    args = parser.parse_args(argv)

    errors: list[str] = []
    if args.python:
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        if running != args.python:
            errors.append(f"python: the lock is for {args.python}, this interpreter is {running}")
    pins = read_pins(args.lock)
    if not pins:
        errors.append(f"{args.lock}: no name==version pin found")
    extra = {}
    for item in args.project:
        name, _, version = item.partition("==")
        extra[canonical(name)] = version
    errors += problems(pins, installed_versions(), extra)
    if errors:
        print(f"{args.lock}: the environment does not match the lock:", file=sys.stderr)
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{args.lock}: {len(pins) + len(extra)} pins match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
