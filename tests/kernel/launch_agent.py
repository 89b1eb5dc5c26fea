"""Test-only launcher: the agent with a control socket whose per-client queue
is set small (--queue-bytes), which `tetrahost run` does not expose: the
slow-client test of test_control_socket.py needs drops to happen quickly.
Everything else starts the real `tetrahost run` (agent_harness.RunningAgent).

    python tests/kernel/launch_agent.py --export-file F [--policy-dir D] [--socket S] [--policy P]...
"""
from __future__ import annotations

import argparse
import logging
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from tetrahost.control.server import ControlServer  # noqa: E402
from tetrahost.daemon import Agent  # noqa: E402
from tetrahost.export.sinks import file_sink  # noqa: E402
from tetrahost.runtime.policy_files import PolicyFiles  # noqa: E402
from tetrahost.runtime.reconciler import PolicyDirectory  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--export-file", required=True)
    p.add_argument("--policy-dir")
    p.add_argument("--socket")
    p.add_argument("--policy", action="append", default=[])
    p.add_argument("--queue-bytes", type=int)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    components = []
    files = None
    if args.policy_dir:
        components.append(PolicyDirectory(args.policy_dir))
        files = PolicyFiles(components[-1])
    if args.socket:
        kw = {"queue_bytes": args.queue_bytes} if args.queue_bytes else {}
        components.append(ControlServer(args.socket, policy_files=files, **kw))
    return Agent([file_sink(args.export_file)], policy_files=args.policy, components=components).run()


def launched_agent(tmp_path, *extra_args):
    """A RunningAgent (tests/kernel/agent_harness.py) started through this launcher."""
    import subprocess

    from agent_harness import SLOWDOWN, RunningAgent, require_root_and_bpf

    class LaunchedAgent(RunningAgent):
        def __init__(self):
            require_root_and_bpf()
            self.events_path = tmp_path / "events.json"
            self.log_path = tmp_path / "agent.log"
            self._log = open(self.log_path, "w+")
            self.proc = subprocess.Popen([sys.executable, __file__, "--export-file", str(self.events_path),
                                          *extra_args], stdout=subprocess.DEVNULL, stderr=self._log)
            self._wait_for(lambda: "tetrahost ready" in self.log_text(), 30 * SLOWDOWN, "the agent to report ready")

    return LaunchedAgent()


if __name__ == "__main__":
    sys.exit(main())
