"""`tetrahost config check [FILE]` and `tetrahost config show [FILE]`."""
from __future__ import annotations

import json
import sys

from tetrahost import config


def register(sub) -> None:
    p = sub.add_parser("config", help="check or show the agent configuration",
                       description=f"Validate {config.DEFAULT_PATH} (or FILE).")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("check", help="validate a configuration file; every problem is named by key",
                        description="Exit 0 when the file is valid, 1 with one line per problem "
                                    "(FILE: key.path: what is wrong) otherwise.")
    c.add_argument("file", nargs="?", default=config.DEFAULT_PATH,
                   help=f"configuration file (default {config.DEFAULT_PATH})")
    c.set_defaults(func=check)
    s = csub.add_parser("show", help="print the effective configuration (file + defaults) as JSON")
    s.add_argument("file", nargs="?", default=None,
                   help=f"configuration file (default {config.DEFAULT_PATH} if it exists)")
    s.set_defaults(func=show)


def check(args) -> int:
    try:
        config.load(args.file)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


def show(args) -> int:
    try:
        cfg = config.load(args.file)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"# from {cfg.source}", file=sys.stderr)
    json.dump(config.as_dict(cfg), sys.stdout, indent=2)
    print()
    return 0
