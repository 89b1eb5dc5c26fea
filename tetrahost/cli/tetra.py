"""tetra: the client side of tetrahost, after Tetragon's `tetra`.

    tetra getevents -o compact < events.json
    journalctl -o cat -u tetrahost | tetra getevents -o compact
    tail -f /var/log/tetrahost/events.json | tetra getevents

Events come from a source; today the only source is Tetragon JSON lines on
stdin (as Tetragon's tetra reads stdin when it is a pipe).  The control socket
of the daemon will be a second EventSource yielding the same (line number,
text) pairs, chosen when stdin is a terminal.

A line that is not a JSON object, or an event the compact format cannot show,
is reported on stderr with its line number and skipped.  A closed output pipe
(`| head`) and Ctrl-C end the command quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Protocol, TextIO

from tetrahost.export.compact import CompactError, format_event

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tetra",
        description="Client for tetrahost events (Tetragon-compatible JSON).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    get = commands.add_parser(
        "getevents",
        help="print events",
        description="Print events read as Tetragon JSON lines from stdin (a pipe or file), "
                    "either passed through as JSON or as one compact line each.",
    )
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
        return line
    return format_event(event, color=color, timestamps=timestamps)


def getevents(args: argparse.Namespace, source: EventSource, out: TextIO, err: TextIO) -> int:
    color = args.output == "compact" and _use_color(args.color, out)
    for number, line in source.lines():
        try:
            text = _render(line, args.output, color, args.timestamps)
            out.write(text + "\n")
        except (ValueError, CompactError) as problem:
            # UnicodeError is a ValueError: a text the output encoding cannot hold.
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


def select_source(stdin: TextIO) -> EventSource | None:
    isatty = getattr(stdin, "isatty", None)
    if isatty is not None and isatty():
        return None   # later: the daemon's control socket
    return StreamSource(stdin)


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
    source = select_source(stdin)
    if source is None:
        print("tetra: no event source: pipe Tetragon JSON lines into stdin "
              "(e.g. `tail -f events.json | tetra getevents -o compact`)", file=stderr)
        return EXIT_USAGE
    try:
        return getevents(args, source, stdout, stderr)
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
