"""Try the remote flow without a ClearML server: the emulator plus real clearml-agent daemons.

    python -m tests.emulator --port 8008 --agents 2 --queue gpu --config-out /tmp/emu.conf

serves the API on PORT (web stub PORT+1, fileserver PORT+2) on 127.0.0.1, creates the queues,
starts N `clearml-agent daemon --queue QUEUE` (plus one on the controller queue, `services`)
that run tasks on this interpreter, writes a clearml.conf for the CLI to FILE, and runs until
interrupted (Ctrl-C or SIGTERM), then stops its agents. Then, in another terminal:

    export CLEARML_CONFIG_FILE=/tmp/emu.conf
    ak-remote templates sync && ak-remote launch structured-classifier -q gpu --parallel 2
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="API port (0: any free one)")
    parser.add_argument("--agents", type=int, default=2, help="agents serving --queue")
    parser.add_argument("--queue", default="gpu", help="the queue trials go to")
    parser.add_argument(
        "--controller-queue", default="services", help="one more agent serves it ('' for none)"
    )
    parser.add_argument("--config-out", type=Path, required=True, help="clearml.conf to write")
    parser.add_argument("--poll", type=float, default=0.5, help="agents' queue poll, seconds")
    args = parser.parse_args(argv)
    if not 0 <= args.agents <= 64:
        parser.error("--agents must be 0 to 64")
    if not 0 <= args.port <= 65533:
        parser.error("--port must be 0 to 65533")
    if not AGENT_BIN.exists():
        parser.error(f"clearml-agent is not installed next to {sys.executable}")
    work = Path(tempfile.mkdtemp(prefix="ak-remote-emulator-"))
    emulator = Emulator(config_dir=work, port=args.port).start()
    emulator.write_config(args.config_out)
    queues = [args.queue] + ([args.controller_queue] if args.controller_queue else [])
    for queue in dict.fromkeys(queues):
        emulator.create_queue(queue)
    agents: list[subprocess.Popen[bytes]] = []
    plan = [(args.queue, n) for n in range(args.agents)]
    if args.controller_queue:
        plan.append((args.controller_queue, 0))
    for queue, n in plan:
        worker = f"emulator-{queue}-{n}"
        env = agent_env(
            emulator,
            {"CLEARML_WORKER_ID": worker, "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": str(args.poll)},
        )
        with (work / f"{worker}.log").open("wb") as log:
            agents.append(
                subprocess.Popen(
                    [str(AGENT_BIN), "daemon", "--queue", queue, "--foreground"],
                    env=env,
                    cwd=work,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    stop = {"now": False}

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    out = sys.stderr
    print(f"emulator: API {emulator.api_url}, files {emulator.files_url}", file=out)
    print(f"agents: {len(plan)} ({', '.join(q for q, _ in plan)}), logs in {work}", file=out)
    print(f"config: export CLEARML_CONFIG_FILE={args.config_out}", file=out, flush=True)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        # As `ak-remote agent up` stops its agents: SIGTERM (a running task is aborted, its
        # process ended), SIGKILL after 15 s, then whatever is left in their process groups.
        stop_agents(agents, grace=15.0)
        emulator.stop()
        print("stopped", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
