"""ak-remote's own defaults: queue, projects, worker image, and how patient to be with the server.

Sources, later ones winning: built-in defaults, the config file (`$AK_REMOTE_CONFIG`, else
`$XDG_CONFIG_HOME/ak-remote/config.toml`, else `~/.config/ak-remote/config.toml`), then
`AK_REMOTE_*` environment variables, then command-line flags (applied by the commands).
ClearML credentials are not here: they stay in clearml.conf / CLEARML_* (no second secret store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ak_remote import __version__
from ak_remote.contract import DEFAULT_PROJECT, DEFAULT_TEMPLATE_PROJECT
from ak_remote.errors import UsageError

# The GPU worker image docker/build.sh tags for this version of ak-remote.
DEFAULT_IMAGE = f"ak-remote-worker:{__version__}-gpu"


@dataclass(frozen=True)
class Config:
    """Resolved ak-remote settings (see the module docstring for where each comes from)."""

    queue: str | None = None  # launch's default queue; None: --queue is required
    project: str = DEFAULT_PROJECT  # where launched runs go
    template_project: str = DEFAULT_TEMPLATE_PROJECT
    image: str = DEFAULT_IMAGE  # worker Docker image recorded in templates
    docker_args: str = "--ipc=host"  # TensorFlow's data pipelines need more shared memory
    http_attempts: int = 4  # tries per request on transient server errors
    http_backoff: float = 0.5  # seconds before the first retry, doubling
    http_timeout: float = 30.0  # read timeout per request, seconds
    poll_interval: float = 5.0  # seconds between status polls of --wait / --follow
    # Price per GPU-hour by queue ("gpu=2.5,gpu-large=4.1"): `status SEARCH` shows the cost.
    gpu_prices: str | None = None
    # seconds --wait / --follow ride out a server that does not answer (a restart) before
    # giving up; the runs go on meanwhile
    wait_outage: float = 300.0
    # seconds a local run's job gets to close its run after Ctrl-C before it is sent SIGTERM,
    # then as long again before SIGKILL (closing takes well over 10 s on a loaded machine)
    interrupt_grace: float = 60.0


_ENV_PREFIX = "AK_REMOTE_"


def config_path() -> Path:
    """Where the config file is read from."""
    explicit = os.environ.get("AK_REMOTE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ak-remote" / "config.toml"


def _coerce(name: str, kind: Any, raw: object, source: str) -> Any:
    try:
        if kind in (int, "int"):
            if isinstance(raw, bool):
                raise ValueError
            value: Any = int(str(raw))
            if value < 1:
                raise ValueError
            return value
        if kind in (float, "float"):
            value = float(str(raw))
            if not value >= 0:
                raise ValueError
            return value
    except ValueError:
        raise UsageError(
            f"{source}: {name} = {raw!r} is not a valid {kind} value", f"fix it in {source}"
        ) from None
    text = str(raw).strip()
    if kind in ("str | None",) and not text:
        return None
    return text


def load_config(path: Path | None = None) -> Config:
    """Defaults, then the config file, then AK_REMOTE_* variables.

    Raises UsageError for an unreadable file, an unknown key or a bad value.
    """
    config = Config()
    path = path or config_path()
    kinds = {f.name: f.type for f in fields(Config)}
    if path.exists():
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10: no TOML reader in the standard library
            raise UsageError(
                f"{path} needs Python 3.11 or newer to be read",
                "use AK_REMOTE_* environment variables instead",
            ) from None
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}", "fix or remove the file") from None
        unknown = sorted(set(raw) - set(kinds))
        if unknown:
            raise UsageError(
                f"{path}: unknown setting {', '.join(unknown)}",
                f"known settings: {', '.join(kinds)}",
            )
        config = replace(config, **{k: _coerce(k, kinds[k], v, str(path)) for k, v in raw.items()})
    env: dict[str, Any] = {}
    for name, kind in kinds.items():
        value = os.environ.get(_ENV_PREFIX + name.upper())
        if value is not None and value != "":
            env[name] = _coerce(name, kind, value, _ENV_PREFIX + name.upper())
    return replace(config, **env) if env else config


def pick(flag: str | None, default: str | None) -> str | None:
    """The flag's value when given (flags win), else the configured default."""
    return flag if flag not in (None, "") else default
