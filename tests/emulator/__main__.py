"""Try the remote flow without a ClearML server: the emulator, real clearml-agent daemons and
the ClearML Web UI.

    python -m tests.emulator --port 8008 --agents 2 --queue gpu --config-out /tmp/emu.conf

serves the API on PORT, the Web UI on PORT+1 and the fileserver on PORT+2 (127.0.0.1), creates
the queues, starts N `clearml-agent daemon --queue QUEUE` (plus one on the controller queue,
`services`) that run tasks on this interpreter, writes a clearml.conf for the CLI to FILE, and
runs until interrupted (Ctrl-C or SIGTERM), then stops its agents. Then, in another terminal:

    export CLEARML_CONFIG_FILE=/tmp/emu.conf
    ak-remote templates sync && ak-remote launch structured-classifier -q gpu --parallel 2

and open the printed Web UI address; log in with the printed access key (user name) and secret
key (password). The built Web UI comes from --web-dist, else $CLEARML_WEB_DIST, else
../shared/vendor/clearml-web-2.0/browser next to this checkout or the one it was cloned from
(tests/emulator/README.md says how to build one). --state-dir keeps tasks, projects, queues,
models, events and files across a restart, as a real server does.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ak_remote.fleet.agents import stop_agents
from tests.emulator.agent import AGENT_BIN, agent_env
from tests.emulator.server import Emulator
from tests.emulator.web import find_web_dist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0, help="API port (0: any free one)")
    parser.add_argument("--agents", type=int, default=2, help="agents serving --queue")
    parser.add_argument("--queue", default="gpu", help="the queue trials go to")
    parser.add_argument(
        "--controller-queue", default="services", help="one more agent serves it ('' for none)"
    )
    parser.add_argument("--config-out", type=Path, required=True, help="clearml.conf to write")
    parser.add_argument("--poll", type=float, default=0.5, help="agents' queue poll, seconds")
    parser.add_argument(
        "--web-dist", type=Path, default=None, help="a built ClearML Web UI (clearml-web) folder"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="keep the server's state here across runs"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.agents <= 64:
        parser.error("--agents must be 0 to 64")
    if not 0 <= args.port <= 65533:
        parser.error("--port must be 0 to 65533")
    if not AGENT_BIN.exists():
        parser.error(f"clearml-agent is not installed next to {sys.executable}")
    web_dist, looked = find_web_dist(args.web_dist)
    if args.web_dist is not None and web_dist is None:
        parser.error(f"--web-dist {args.web_dist} holds no built Web UI (no index.html)")
    work = Path(tempfile.mkdtemp(prefix="ak-remote-emulator-"))
    emulator = Emulator(
        config_dir=work,
        port=args.port,
        state_dir=args.state_dir,
        web_dist=web_dist,
        web_looked=looked,
    ).start()
    emulator.write_config(args.config_out)
    queues = [args.queue] + ([args.controller_queue] if args.controller_queue else [])
    for queue in dict.fromkeys(queues):
        if emulator.state.queue_by_name(queue) is None:
            emulator.create_queue(queue)
    plan = [(args.queue, n) for n in range(args.agents)]
    if args.controller_queue:
        plan.append((args.controller_queue, 0))
    # Worker ids name this emulator (its API port): clearml-agent refuses to start a second
    # daemon with the id of one already running on the machine, whichever server it serves.
    api_port = emulator.api_url.rsplit(":", 1)[1]
    agents: dict[str, subprocess.Popen[bytes]] = {}
    for queue, n in plan:
        worker = f"emulator-{api_port}-{queue}-{n}"
        env = agent_env(
            emulator,
            {"CLEARML_WORKER_ID": worker, "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": str(args.poll)},
        )
        with (work / f"{worker}.log").open("wb") as log:
            agents[worker] = subprocess.Popen(
                [str(AGENT_BIN), "daemon", "--queue", queue, "--foreground"],
                env=env,
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    stop = {"now": False}

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    out = sys.stderr
    print(f"emulator: API {emulator.api_url}, files {emulator.files_url}", file=out)
    if args.state_dir is not None:
        print(f"state: kept in {args.state_dir}", file=out)
    print(f"agents: {len(plan)} ({', '.join(q for q, _ in plan)}), logs in {work}", file=out)
    print(f"config: export CLEARML_CONFIG_FILE={args.config_out}", file=out)
    if web_dist is not None:
        print(f"Web UI: open {emulator.web_url}/ and log in with", file=out)
        print(f"  user name: {emulator.access_key}", file=out)
        print(f"  password:  {emulator.secret_key}", file=out)
    else:
        print(f"Web UI: no built app found (looked in: {', '.join(map(str, looked))});", file=out)
        print("  see tests/emulator/README.md, 'The Web UI', to get one", file=out)
    out.flush()
    try:
        while not stop["now"]:
            time.sleep(0.5)
            for worker, process in list(agents.items()):
                if process.poll() is None:
                    continue
                # Do not go on showing a worker that is gone: its daemon unregisters on a clean
                # exit, but not when it dies or refuses to start.
                del agents[worker]
                with emulator.state.lock:
                    emulator.state.workers.pop(worker, None)
                print(
                    f"agent {worker} exited ({process.returncode}); its log: "
                    f"{work / f'{worker}.log'}",
                    file=out,
                    flush=True,
                )
    finally:
        # As `ak-remote agent up` stops its agents: SIGTERM (a running task is aborted, its
        # process ended), SIGKILL after 15 s, then whatever is left in their process groups.
        stop_agents(list(agents.values()), grace=15.0)
        emulator.stop()
        print("stopped", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
