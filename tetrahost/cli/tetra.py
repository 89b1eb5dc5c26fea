"""tetra: the client side of tetrahost, after Tetragon's `tetra`.

    tetra getevents -o compact < events.json
    journalctl -o cat -u tetrahost | tetra getevents -o compact
    tail -f /var/log/tetrahost/events.json | tetra getevents
    tetra getevents -o compact --process-only --unit 'nginx*'     # live, from the agent
    tetra status
    tetra tracingpolicy list | add FILE | delete NAME | check FILE
                      | set-mode NAME enforce|monitor | enable NAME | disable NAME

Events come from a source: Tetragon JSON lines on stdin when stdin is a pipe
or a file (as Tetragon's tetra reads stdin), else the agent's control socket
(--socket, $TETRAHOST_SOCKET, default /run/tetrahost/tetrahost.sock), where
the filters are evaluated inside the agent so unmatched events are never sent.

A line that is not a JSON object, or an event the compact format cannot show,
is reported on stderr with its line number and skipped.  A closed output pipe
(`| head`) and Ctrl-C end the command quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Iterator
from typing import Protocol, TextIO

from tetrahost.cli import tracingpolicy
from tetrahost.control.client import ControlClient, NoAgent
from tetrahost.control.protocol import DEFAULT_SOCKET, unwrap_event
from tetrahost.export.compact import CompactError, format_event
from tetrahost.export.terminal import terminal_json_line

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class EventSource(Protocol):
    name: str

    def lines(self) -> Iterator[tuple[int, str]]:
        """(1-based line number, line text without newline) for each event."""


class StreamSource:
    """Tetragon JSON lines from a text stream (stdin)."""

    def __init__(self, stream: TextIO, name: str = "stdin"):
        self.stream = stream
        self.name = name

    def lines(self) -> Iterator[tuple[int, str]]:
        for number, line in enumerate(self.stream, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


class SocketSource:
    """Live events from the agent's control socket, filtered in the agent."""

    def __init__(self, path: str, filter_spec: dict, err: TextIO):
        self.path = path
        self.name = path
        self.filter_spec = filter_spec
        self.err = err

    def lines(self) -> Iterator[tuple[int, str]]:
        with ControlClient(self.path) as client:
            for number, line in enumerate(client.stream(self.filter_spec), start=1):
                event = unwrap_event(line)
                if event is not None:
                    yield number, event
                    continue
                try:
                    notice = json.loads(line)
                except ValueError:
                    notice = {}
                if "dropped" in notice:
                    print(f"tetra: {notice['dropped']} events dropped by the agent: this client "
                          f"was too slow ({notice.get('dropped_total')} in total)", file=self.err)
                elif notice.get("ok") is False:
                    raise NoAgent(notice.get("error", "the agent ended the stream"))


def _socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", "--server-address", dest="socket",
                        default=os.environ.get("TETRAHOST_SOCKET", DEFAULT_SOCKET),
                        help="the agent's control socket (default: $TETRAHOST_SOCKET or %(default)s)")


def _csv(value: str) -> list[str]:
    return [v for v in (x.strip() for x in value.split(",")) if v]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tetra",
        description="Client for tetrahost events (Tetragon-compatible JSON).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    status = commands.add_parser("status", help="the agent's health, policies and counters")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    _socket_option(status)
    tracingpolicy.register(commands, _socket_option)
    get = commands.add_parser(
        "getevents",
        help="print events",
        description="Print events read as Tetragon JSON lines from stdin (a pipe or file), "
                    "or live from the agent's control socket when stdin is not a pipe or file, "
                    "either passed through as JSON or as one compact line each. Filters apply "
                    "to the agent's stream and are evaluated in the agent.",
    )
    _socket_option(get)
    filt = get.add_argument_group("filters (agent stream; all given must match, a list matches any value)")
    filt.add_argument("--process-only", action="store_true", help="exec and exit events only")
    filt.add_argument("-e", "--event-types", type=_csv, action="extend", metavar="TYPES",
                      help="comma-separated: PROCESS_EXEC,PROCESS_EXIT,PROCESS_KPROBE,PROCESS_LSM,...")
    filt.add_argument("--binary", action="append", metavar="REGEX", help="regex searched in the binary path")
    filt.add_argument("--pid", type=int, action="append", dest="pids", metavar="PID")
    filt.add_argument("--policy-names", type=_csv, action="extend", metavar="NAMES")
    filt.add_argument("--unit", action="append", dest="units", metavar="UNIT",
                      help="systemd unit (globs allowed: 'nginx*')")
    filt.add_argument("--container", action="append", dest="containers", metavar="ID",
                      help="container id or id prefix")
    filt.add_argument("--namespace", action="append", dest="namespaces", metavar="NAME",
                      help="workload namespace: container runtime (docker, podman, containerd, cri-o, "
                           "lxc, systemd-nspawn) or, outside containers, the top-level systemd slice "
                           "(system.slice, user.slice, -.slice)")
    get.add_argument("-o", "--output", choices=("json", "compact"), default="json",
                     help="output format: json passes each event line through unchanged, "
                          "compact prints one human-readable line per event (default: json)")
    get.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                     help="colors in compact output; auto colors only a terminal (default: auto)")
    get.add_argument("--timestamps", action="store_true",
                     help="prefix compact lines with the event time")
    return parser


def _use_color(mode: str, out: TextIO) -> bool:
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _render(line: str, output: str, color: bool, timestamps: bool) -> str:
    """The output text for one input line; raises ValueError for a bad one."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    if output == "json":
        return terminal_json_line(line, event)      # unchanged unless it holds raw controls/bytes
    return format_event(event, color=color, timestamps=timestamps)


def getevents(args: argparse.Namespace, source: EventSource, out: TextIO, err: TextIO) -> int:
    color = args.output == "compact" and _use_color(args.color, out)
    for number, line in source.lines():
        try:
            text = _render(line, args.output, color, args.timestamps)
            out.write(text + "\n")
        except (ValueError, CompactError) as problem:
            # UnicodeError is a ValueError: a text the output encoding cannot hold.
            # (CompactError texts quote the event's strings already escaped.)
            print(f"tetra: {source.name} line {number}: {problem}; skipped", file=err)
            continue
        out.flush()   # an interactive pipe (tail -f) must see each event at once
    return EXIT_OK


def _tolerate_bytes(stream: TextIO) -> None:
    """Carry non-UTF-8 bytes through (paths are bytes: a binary named b"\\xff" must print)."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="surrogateescape")
        except (ValueError, OSError):
            pass


def filter_spec(args: argparse.Namespace) -> dict:
    spec = {"process_only": args.process_only or None, "event_types": args.event_types,
            "binary": args.binary, "pids": args.pids, "policy_names": args.policy_names,
            "units": args.units, "containers": args.containers, "namespaces": args.namespaces}
    return {k: v for k, v in spec.items() if v}


def _stdin_has_data(stdin: TextIO) -> bool:
    """A pipe or a file on stdin means "read me"; a terminal or /dev/null does not."""
    isatty = getattr(stdin, "isatty", None)
    if isatty is not None and isatty():
        return False
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return True           # an in-memory stream (tests, embedding)
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def select_source(stdin: TextIO, args: argparse.Namespace | None = None,
                  err: TextIO | None = None) -> EventSource | None:
    if _stdin_has_data(stdin):
        return StreamSource(stdin)
    path = getattr(args, "socket", DEFAULT_SOCKET)
    if os.path.exists(path):
        return SocketSource(path, filter_spec(args) if args is not None else {}, err or sys.stderr)
    return None


def _status(args, out: TextIO, err: TextIO) -> int:
    try:
        with ControlClient(args.socket) as client:
            answer = client.call("status")
    except NoAgent as exc:
        print(f"tetra: {exc}", file=err)
        return 1
    if not answer.get("ok"):
        print(f"tetra: {answer.get('error')}", file=err)
        return 1
    st = answer["status"]
    if args.output == "json":
        print(json.dumps(st, indent=2), file=out)
        return 0
    c = st["counters"]
    lines = [f"health: {st['health']}   node: {st['node_name']}   pid: {st['pid']}   "
             f"uptime: {st['uptime_seconds']:.0f}s",
             f"kernel: {st['kernel']['release']}",
             "  features: " + " ".join(k for k, v in sorted(st["kernel"]["features"].items()) if v is True)]
    lines += [f"  in use: {u}" for u in st["kernel"]["in_use"]]
    lines.append(f"policies: {len(st['policies'])} (reloads ok {st['policy_reloads'].get('ok', 0)}, "
                 f"failed {st['policy_reloads'].get('failed', 0)})")
    for p in st["policies"]:
        lines.append(f"  {p['name']}: {p['state']} ({p['mode']}, {p['file']})")
        lines += [f"    FALLBACK {f}" for f in p.get("fallbacks", [])]
        lines += [f"    REATTACHED {r}" for r in p.get("reattached", [])]
    for file, errors in st["policy_errors"].items():
        lines.append(f"  ERROR {file}: " + "; ".join(errors))
    pin = st.get("pinned")
    if pin:
        lines.append(f"pinned: {pin['pin_dir']} g{pin['generation']} ({'adopted' if pin['adopted'] else 'new'}); "
                     f"hooks {pin['hooks_adopted']} adopted, {pin['hooks_fresh']} fresh, "
                     f"{pin['hooks_unpinned']} not pinned; orphan pins: "
                     + (", ".join(pin["orphans"]) or "none"))
    elif "pinned" in st:
        lines.append("pinned: off (enforcement ends with the agent)")
    lines.append(f"events: {c['records']} records, " + ", ".join(f"{k} {v}" for k, v in sorted(c["events"].items())))
    lines.append("lost in kernel: " + (", ".join(f"{k} {v}" for k, v in sorted(c["lost"].items())) or "none")
                 + f"; decode errors: {c['decode_errors']}; dropped for slow clients: "
                 f"{st['control']['dropped_total']}")
    print("\n".join(lines), file=out)
    return 0


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    if stdin is None:
        stdin = sys.stdin
        _tolerate_bytes(stdin)
    if stdout is None:
        stdout = sys.stdout
        _tolerate_bytes(stdout)
    stderr = stderr if stderr is not None else sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            return _status(args, stdout, stderr)
        if args.command in ("tracingpolicy", "tp"):
            return tracingpolicy.run(args, stdout, stderr)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    source = select_source(stdin, args, stderr)
    if source is None:
        print(f"tetra: no event source: no agent socket at {args.socket} (is tetrahost running?) and "
              "stdin is not a pipe: pipe Tetragon JSON lines into stdin "
              "(e.g. `tail -f events.json | tetra getevents -o compact`)", file=stderr)
        return EXIT_USAGE
    if isinstance(source, StreamSource) and filter_spec(args):
        print("tetra: filters apply to the agent's live stream, not to stdin", file=stderr)
        return EXIT_USAGE
    try:
        return getevents(args, source, stdout, stderr)
    except NoAgent as exc:
        print(f"tetra: {exc}", file=stderr)
        return 1
    except ValueError as exc:     # the agent refused the filter
        print(f"tetra: {exc}", file=stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's
        # final flush of stdout from raising again at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
