"""ak_remote.fleet.agents: agent command lines (parsed by clearml-agent's own parser) and the
declarative queue file. Starting agents: tests/integration/test_agents.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ak_remote.catalog import PROJECT_ROOT
from ak_remote.errors import ExitCode, UsageError
from ak_remote.fleet.agents import (
    SKIP_ENV_INSTALL,
    AgentCommand,
    QueueSpec,
    build_agent_commands,
    load_queue_file,
    parse_gpus,
)

REPO = PROJECT_ROOT
QUEUES_FILE = REPO / "infra" / "queues.toml"


def daemon_args(command: AgentCommand) -> list[str]:
    """The argv after the executable, as clearml-agent's own parser receives it."""
    return command.argv[1:]


def parse_with_clearml_agent(command: AgentCommand) -> dict[str, object]:
    """Parse the argv with the real clearml-agent argument parser (exits 2 on an unknown flag)."""
    from clearml_agent.interface import get_parser

    parsed = vars(get_parser().parse_args(daemon_args(command)))
    parsed["queues"] = [q.name for q in parsed["queues"]]
    return parsed


# --- build_agent_commands: the main cases ---------------------------------------------------


def test_one_agent_for_several_gpus_in_docker() -> None:
    (command,) = build_agent_commands(["gpu"], gpus="0,1", per_gpu=False, image="ak:gpu")
    assert command.argv == [
        "clearml-agent",
        "daemon",
        "--queue",
        "gpu",
        "--gpus",
        "0,1",
        "--foreground",
        "--docker",
        "ak:gpu",
    ]
    assert command.env == {}  # the image sets CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL itself
    assert command.gpus == "0,1"


def test_one_agent_per_gpu() -> None:
    commands = build_agent_commands(["gpu-large", "gpu"], gpus="0,1,3", per_gpu=True, image="img")
    assert [c.gpus for c in commands] == ["0", "1", "3"]
    for command, gpu in zip(commands, ["0", "1", "3"], strict=True):
        assert command.argv[command.argv.index("--gpus") + 1] == gpu
        # queue order is priority order and is kept as given
        assert command.argv[2:5] == ["--queue", "gpu-large", "gpu"]


def test_gpu_range_expands_per_gpu() -> None:
    commands = build_agent_commands(["gpu"], gpus="0-3", per_gpu=True, image=None)
    assert [c.gpus for c in commands] == ["0", "1", "2", "3"]


def test_without_image_runs_on_host_python_and_installs_nothing() -> None:
    (command,) = build_agent_commands(["gpu"], gpus="0", per_gpu=False, image=None)
    assert "--docker" not in command.argv
    assert command.env == {SKIP_ENV_INSTALL: "1"}
    assert command.shell() == (
        "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1 clearml-agent daemon --queue gpu --gpus 0 "
        "--foreground"
    )


def test_cpu_only_agent() -> None:
    (command,) = build_agent_commands(
        ["cpu"], gpus=None, per_gpu=False, image="ak:cpu", cpu_only=True
    )
    assert "--cpu-only" in command.argv
    assert "--gpus" not in command.argv
    assert command.gpus is None


def test_no_gpus_flag_means_one_agent_with_every_visible_gpu() -> None:
    (command,) = build_agent_commands(["gpu"], gpus=None, per_gpu=False, image=None)
    assert "--gpus" not in command.argv
    assert "--cpu-only" not in command.argv


def test_detached_services_mode_and_extras() -> None:
    (command,) = build_agent_commands(
        ["services"],
        gpus=None,
        per_gpu=False,
        image="ak:cpu",
        cpu_only=True,
        foreground=False,
        services_mode=True,
        create_queue=True,
        standalone=True,
        config_file="/etc/clearml/agent.conf",
    )
    assert command.argv[:3] == ["clearml-agent", "--config-file", "/etc/clearml/agent.conf"]
    for flag in ("--services-mode", "--create-queue", "--standalone-mode", "--detached"):
        assert flag in command.argv
    assert "--foreground" not in command.argv
    assert command.argv[-2:] == ["--docker", "ak:cpu"]


def test_shell_line_quotes_what_needs_quoting() -> None:
    (command,) = build_agent_commands(
        ["gpu"], gpus="0", per_gpu=False, image=None, config_file="/my dir/clearml.conf"
    )
    assert "'/my dir/clearml.conf'" in command.shell()


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"queues": ["gpu", "cpu"], "gpus": "0,1", "per_gpu": True, "image": "ak:gpu"},
        {"queues": ["gpu"], "gpus": "0-1", "per_gpu": False, "image": None},
        {"queues": ["cpu"], "gpus": None, "per_gpu": False, "image": "ak:cpu", "cpu_only": True},
        {
            "queues": ["services"],
            "gpus": None,
            "per_gpu": False,
            "image": "ak:cpu",
            "cpu_only": True,
            "services_mode": True,
            "create_queue": True,
            "standalone": True,
            "foreground": False,
        },
    ],
)
def test_real_clearml_agent_parser_accepts_every_command(kwargs: dict[str, object]) -> None:
    for command in build_agent_commands(**kwargs):  # type: ignore[arg-type]
        parsed = parse_with_clearml_agent(command)
        assert parsed["command"] == "daemon"
        assert parsed["queues"] == kwargs["queues"]
        assert parsed["gpus"] == command.gpus
        assert parsed["cpu_only"] is bool(kwargs.get("cpu_only", False))
        assert parsed["foreground"] is bool(kwargs.get("foreground", True))
        assert parsed["detached"] is not bool(kwargs.get("foreground", True))
        image = kwargs["image"]
        if image:
            assert parsed["docker"] == [image]
        else:
            assert not parsed["docker"]
        assert parsed["create_queue"] is bool(kwargs.get("create_queue", False))
        assert parsed["standalone_mode"] is bool(kwargs.get("standalone", False))


# --- build_agent_commands: bad input --------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queues": []}, "no queue given"),
        ({"queues": ["gpu", "gpu"]}, "given twice"),
        ({"queues": ["my queue"]}, "invalid queue name"),
        ({"queues": [""]}, "invalid queue name"),
        ({"queues": ["-gpu"]}, "invalid queue name"),
        ({"queues": ["gpu"], "gpus": "0", "cpu_only": True}, "contradict"),
        ({"queues": ["gpu"], "per_gpu": True}, "--per-gpu needs --gpus"),
        ({"queues": ["gpu"], "gpus": ""}, "--gpus is empty"),
        ({"queues": ["gpu"], "gpus": "a"}, "not a GPU index"),
        ({"queues": ["gpu"], "gpus": "0,,1"}, "not a GPU index"),
        ({"queues": ["gpu"], "gpus": "-1"}, "not a GPU range"),
        ({"queues": ["gpu"], "gpus": "3-1"}, "not a GPU range"),
        ({"queues": ["gpu"], "gpus": "0,1,0"}, "more than once"),
        ({"queues": ["gpu"], "gpus": "0-2,1"}, "more than once"),
        ({"queues": ["gpu"], "image": ""}, "invalid image name"),
        ({"queues": ["gpu"], "image": "a b"}, "invalid image name"),
        ({"queues": ["services"], "services_mode": True}, "needs --image"),
        ({"queues": ["gpu"], "agent": ()}, "no agent executable"),
    ],
)
def test_bad_input_is_a_usage_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        build_agent_commands(**kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == ExitCode.USAGE


def test_a_bare_string_is_one_queue_not_one_per_letter() -> None:
    (command,) = build_agent_commands("gpu", gpus=None, per_gpu=False, image=None)
    assert command.argv[2:4] == ["--queue", "gpu"]


def test_parse_gpus_accepts_spaces_and_mixed_ranges() -> None:
    assert parse_gpus(" 0, 2-3 ") == ["0", "2", "3"]


# --- load_queue_file ------------------------------------------------------------------------


def test_repository_queue_file_declares_the_four_queues() -> None:
    specs = load_queue_file(QUEUES_FILE)
    assert [s.name for s in specs] == ["gpu", "gpu-large", "cpu", "services"]
    for spec in specs:
        assert spec.description
        assert "\n" not in spec.description
        assert "ak-remote" in spec.tags


def test_queue_file_minimal_entry(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('[[queue]]\nname = "only"\n', encoding="utf-8")
    assert load_queue_file(path) == [QueueSpec(name="only")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no queue declared"),
        ("queue = []\n", "no queue declared"),
        ("[[queue]]\nname = \n", "not valid TOML"),
        ('[[queues]]\nname = "gpu"\n', "unknown top-level key 'queues'"),
        ("[[queue]]\ndescription = 'x'\n", "invalid or missing queue name"),
        ('[[queue]]\nname = "a b"\n', "invalid or missing queue name"),
        ("[[queue]]\nname = 3\n", "invalid or missing queue name"),
        ('[[queue]]\nname = "gpu"\ndescripton = "typo"\n', "unknown key 'descripton'"),
        ('[[queue]]\nname = "gpu"\ndescription = 1\n', "must be a string"),
        ('[[queue]]\nname = "gpu"\ntags = "gpu"\n', "must be a list"),
        ('[[queue]]\nname = "gpu"\ntags = [""]\n', "must be a list"),
        ('[[queue]]\nname = "gpu"\n[[queue]]\nname = "gpu"\n', "declared twice"),
        ('queue = "gpu"\n', "no queue declared"),
        ("queue = [1]\n", "must be a table"),
    ],
)
def test_bad_queue_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "q.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        load_queue_file(path)


def test_missing_queue_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_queue_file(tmp_path / "nope.toml")
