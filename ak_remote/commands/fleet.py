"""`ak-remote queues`, `agent up`, `agents` and `doctor`: the GPU fleet behind the queues."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from ak_remote import ui
from ak_remote.catalog import PROJECT_ROOT
from ak_remote.commands.common import App, dry_run_option, json_option, pass_app
from ak_remote.errors import RunFailedError, ServerError, StoppedError, UsageError

DEFAULT_QUEUE_FILE = PROJECT_ROOT / "infra" / "queues.toml"


@click.group()
def queues() -> None:
    """List the server's queues, or create the ones a queue file declares."""


@queues.command("list")
@json_option()
@pass_app
def queues_list(app: App, as_json: bool) -> None:
    """List the queues on the server with their queued runs."""

    found = app.client().get_queues()
    if as_json:
        ui.as_json(
            [
                {"id": q.get("id"), "name": q.get("name"), "queued": len(q.get("entries") or [])}
                for q in found
            ]
        )
        return
    ui.data(
        ui.table(
            ["queue", "queued", "id"],
            [[q.get("name"), len(q.get("entries") or []), q.get("id")] for q in found],
        )
    )


@queues.command("apply")
@click.argument("queue_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@dry_run_option()
@json_option("Print the result as JSON.")
@pass_app
def queues_apply(app: App, queue_file: Path | None, dry_run: bool, as_json: bool) -> None:
    """Create the queues QUEUE_FILE declares (default infra/queues.toml) that are missing.

    Existing queues are left as they are; running it twice changes nothing the second time.
    """
    from ak_remote.fleet.agents import load_queue_file
    from ak_remote.fleet.queues import apply_queues

    specs = load_queue_file(queue_file or DEFAULT_QUEUE_FILE)
    result = apply_queues(app.client(), specs, dry_run=dry_run)
    if as_json:
        ui.as_json({"created": result.created, "existing": result.existing, "dry_run": dry_run})
        return
    verb = "would create" if dry_run else "created"
    for name in result.created:
        ui.data(f"{verb} {name}")
    for name in result.existing:
        ui.data(f"exists  {name}")
    ui.next_steps(["ak-remote agent up --queue gpu --gpus 0 --print", "ak-remote doctor"])


@click.group()
def agent() -> None:
    """Start clearml-agent daemons on this host."""


@agent.command("up")
@click.option(
    "-q",
    "--queue",
    "queue_names",
    multiple=True,
    required=True,
    help="Queue to serve (repeatable; the order is priority).",
)
@click.option("--gpus", help="GPU indices to use: 0, 0,1 or 0-3.")
@click.option("--per-gpu", is_flag=True, help="One agent per GPU instead of one for all of them.")
@click.option("--image", help="Run each task in this Docker image (docker mode).")
@click.option("--cpu-only", is_flag=True, help="Serve CPU queues; no GPU.")
@click.option("--services-mode", is_flag=True, help="Run many long-lived tasks (needs --image).")
@click.option("--create-queue", is_flag=True, help="Create the queues if missing.")
@click.option("--detached", is_flag=True, help="Daemonize instead of running in the foreground.")
@click.option("--print", "print_only", is_flag=True, help="Print the command lines; start nothing.")
def agent_up(
    queue_names: tuple[str, ...],
    gpus: str | None,
    per_gpu: bool,
    image: str | None,
    cpu_only: bool,
    services_mode: bool,
    create_queue: bool,
    detached: bool,
    print_only: bool,
) -> None:
    """Start `clearml-agent daemon` processes serving the queues.

    \b
    Examples:
      ak-remote agent up -q gpu --gpus 0,1 --per-gpu --image ak-remote-worker:0.1.0-gpu
      ak-remote agent up -q cpu --cpu-only --print
    """
    from ak_remote.fleet.agents import build_agent_commands, start_agents, supervise_agents

    commands = build_agent_commands(
        list(queue_names),
        gpus=gpus,
        per_gpu=per_gpu,
        image=image,
        cpu_only=cpu_only,
        foreground=not detached,
        services_mode=services_mode,
        create_queue=create_queue,
    )
    if print_only:
        for command in commands:
            ui.data(command.shell())
        return
    if image is not None:
        from ak_remote.fleet.images import check_worker_image

        checked = check_worker_image(image)
        if checked.problem is not None:
            fix = "build the worker image with `make image` and pass the ID it prints"
            raise UsageError(checked.problem, fix)
        if checked.no_git is not None:
            # Not refused: templates that carry their script still run in it.
            ui.warn(
                f"{checked.no_git}; rebuild it with `make image` (its bases have git) "
                "or add git to its base"
            )
    processes = start_agents(commands)
    ui.info(f"started {len(processes)} agent(s): pids {', '.join(str(p.pid) for p in processes)}")
    ui.next_steps(["ak-remote agents", "ak-remote doctor"])
    # Stopping `agent up` (Ctrl-C, SIGTERM, SIGHUP) stops its agents and their tasks' processes.
    codes, stopped = supervise_agents(processes)
    if stopped == signal.SIGINT:
        raise KeyboardInterrupt
    if stopped is not None:
        raise StoppedError(f"stopped by {signal.Signals(stopped).name}; its agents stopped too")
    failed = [f"pid {p.pid} exit {code}" for p, code in zip(processes, codes, strict=True) if code]
    if failed:
        raise RunFailedError(
            f"{len(failed)} agent(s) exited with an error: {', '.join(failed)}",
            "read the agents' output above; `ak-remote agent up --print` shows their commands",
        )


@click.command()
@json_option()
@pass_app
def agents(app: App, as_json: bool) -> None:
    """List registered workers with their queues and current run."""
    from ak_remote.fleet.queues import list_workers

    rows = list_workers(app.client())
    if as_json:
        ui.as_json(rows)
        return
    if not rows:
        ui.info("no workers registered")
        ui.next_steps(["ak-remote agent up --queue gpu --gpus 0"])
        return
    ui.data(
        ui.table(
            ["worker", "queues", "task", "last activity"],
            [[r.worker, ",".join(r.queues), r.task or "-", r.last_activity] for r in rows],
        )
    )


@click.command()
@click.option(
    "-q",
    "--queue",
    "queue_names",
    multiple=True,
    help="Queue to check (repeatable) [default: AK_REMOTE_QUEUE, else every queue: at least "
    "one must have an agent].",
)
@json_option("Print the checks as JSON.")
@pass_app
def doctor(app: App, queue_names: tuple[str, ...], as_json: bool) -> None:
    """Check credentials, server, queues, their workers and the worker image.

    Templates that record a git repository need git in the image they name (checked when this
    host holds it). Prints one fix per problem; exits 4 when anything needs fixing.
    """
    from ak_remote.config import DEFAULT_IMAGE
    from ak_remote.contract import server_configured
    from ak_remote.fleet.doctor import diagnose

    config = app.config
    names = list(queue_names) or ([config.queue] if config.queue else [])
    checks = diagnose(
        app.client,
        server_configured(),
        names,
        config.image,
        DEFAULT_IMAGE,
        template_project=config.template_project,
    )
    if as_json:
        ui.as_json(checks)
    else:
        for check in checks:
            ui.data(f"{'ok ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
            if not check.ok:
                ui.data(f"     fix: {check.fix}")
    failing = [check.name for check in checks if not check.ok]
    if failing:
        raise ServerError(
            f"doctor found {len(failing)} problem(s): {', '.join(failing)}",
            "apply the fixes listed above",
        )
