"""ak-remote's own settings: defaults < config file < AK_REMOTE_* < flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ak_remote.clearml_api import client_from_config
from ak_remote.cli import cli
from ak_remote.config import DEFAULT_IMAGE, config_path, load_config
from ak_remote.errors import UsageError
from ak_remote.launcher import templates
from tests.emulator.server import Emulator
from tests.helpers import invoke


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults(isolated_home: Path) -> None:
    config = load_config()
    assert config.queue is None
    assert config.project == "ak-remote"
    assert config.template_project == "ak-remote/templates"
    assert config.image == DEFAULT_IMAGE
    assert config_path() == isolated_home / ".config" / "ak-remote" / "config.toml"


def test_file_then_environment(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(config_path(), 'queue = "gpu"\nproject = "team"\nhttp_attempts = 2\n')
    config = load_config()
    assert (config.queue, config.project, config.http_attempts) == ("gpu", "team", 2)
    monkeypatch.setenv("AK_REMOTE_QUEUE", "gpu-large")
    monkeypatch.setenv("AK_REMOTE_HTTP_BACKOFF", "0.25")
    config = load_config()
    assert (config.queue, config.project, config.http_backoff) == ("gpu-large", "team", 0.25)


def test_explicit_file_and_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "ak-remote" / "config.toml"
    explicit = write(tmp_path / "c.toml", 'image = "reg/img:7"\n')
    monkeypatch.setenv("AK_REMOTE_CONFIG", str(explicit))
    assert load_config().image == "reg/img:7"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queue = [", "cannot read"),
        ('colour = "red"\n', "unknown setting colour"),
        ("http_attempts = 0\n", "not a valid int"),
        ('http_timeout = "soon"\n', "not a valid float"),
    ],
)
def test_bad_files_are_usage_errors(isolated_home: Path, text: str, message: str) -> None:
    write(config_path(), text)
    with pytest.raises(UsageError, match=message):
        load_config()


def test_flags_win_over_environment_and_file(
    clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates.sync(client_from_config(), "ak-remote/templates", "img:1", "")
    for name in ("gpu", "cpu"):
        clearml_emulator.create_queue(name)
    write(config_path(), 'queue = "cpu"\nproject = "from-file"\n')
    monkeypatch.setenv("AK_REMOTE_PROJECT", "from-env")

    def plan(*flags: str) -> dict[str, object]:
        result = CliRunner().invoke(
            cli, ["launch", "structured-classifier", "--dry-run", "--json", *flags]
        )
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    by_config = plan()
    assert by_config["queue"]["name"] == "cpu"  # type: ignore[index]
    assert by_config["project"]["name"] == "from-env"  # type: ignore[index]
    by_flags = plan("-q", "gpu", "--project", "from-flag")
    assert by_flags["queue"]["name"] == "gpu"  # type: ignore[index]
    assert by_flags["project"]["name"] == "from-flag"  # type: ignore[index]


def test_no_queue_anywhere_is_a_usage_error(clearml_emulator: Emulator) -> None:
    result = invoke("launch", "structured-classifier")
    assert result.exit_code == 2
    assert "AK_REMOTE_QUEUE" in result.stderr
