"""`tetrahost`: the agent's command line (run, probe, policy check, ...).

Each subcommand lives in its own module exposing `register(subparsers)`, which
adds its parser and sets `func(args) -> int` as the handler.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMANDS = ["tetrahost.cli.run_cmd", "tetrahost.cli.probe_cmd", "tetrahost.cli.policy_cmd",
               "tetrahost.cli.config_cmd", "tetrahost.cli.cleanup_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tetrahost",
        description="eBPF security observability and enforcement for plain Linux hosts "
                    "(Tetragon TracingPolicy compatible).")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"], help="agent log level (default: info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
