"""`tetra tracingpolicy list | add FILE | delete NAME | check FILE |
set-mode NAME enforce|monitor | enable NAME | disable NAME`.

add and delete go through the agent, which writes or removes the drop-in
file in its policy directory (so the change survives restarts) and applies
it at once; set-mode, enable and disable are kept by the agent beside its
policy directory (runtime/overrides.py), so they survive restarts too;
check runs locally and needs no agent.
"""
from __future__ import annotations

import json
import os

from tetrahost.control.client import ControlClient, NoAgent


def register(commands, socket_option) -> None:
    tp = commands.add_parser("tracingpolicy", aliases=["tp"], help="manage the agent's tracing policies")
    sub = tp.add_subparsers(dest="tp_command", metavar="COMMAND")
    sub.required = True
    ls = sub.add_parser("list", help="loaded policies: state, mode, hooks, counters")
    ls.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add = sub.add_parser("add", help="validate FILE and install it in the agent's policy directory")
    add.add_argument("file")
    add.add_argument("--name", help="file name in the policy directory (default: FILE's base name)")
    delete = sub.add_parser("delete", help="remove the policy NAME (deletes its drop-in file)")
    delete.add_argument("name")
    check = sub.add_parser("check", help="validate FILE without loading it; say how each hook would attach here")
    check.add_argument("file")
    set_mode = sub.add_parser("set-mode", help="run the policy NAME enforcing or monitoring only "
                              "(wins over its file's mode, kept across restarts)")
    set_mode.add_argument("name")
    set_mode.add_argument("mode", choices=("enforce", "monitor"))
    enable = sub.add_parser("enable", help="attach the disabled policy NAME again")
    enable.add_argument("name")
    disable = sub.add_parser("disable", help="detach the policy NAME, keeping its file (kept across restarts)")
    disable.add_argument("name")
    for leaf in (ls, add, delete, check, set_mode, enable, disable):   # check ignores it: uniform scripts
        socket_option(leaf)


def run(args, out, err) -> int:
    if args.tp_command == "check":
        # the same verdict as `tetrahost policy check`: valid, compiles for
        # the kernel side, and how each hook attaches here (probed as root)
        from tetrahost.cli.policy_cmd import check_paths
        return check_paths([args.file], no_probe=False, out=out, err=err)
    content = None
    if args.tp_command == "add":
        # read once, within the policy file limits (a FIFO, a device or a huge
        # file is refused here), and validate: a broken file is refused before
        # anything is sent; what is sent is what was validated
        from tetrahost.policy import LoadResult, PolicyError, load_text, render_result
        from tetrahost.policy.load import read_policy_file
        try:
            content = read_policy_file(args.file)
            result = load_text(content, file=args.file)
        except PolicyError as exc:
            result = LoadResult(args.file, errors=[exc])
        if not result.ok:
            print(render_result(result), file=err)
            return 1
    try:
        with ControlClient(args.socket) as client:
            return _remote(args, client, out, err, content)
    except NoAgent as exc:
        print(f"tetra: {exc}", file=err)
        return 1
    except OSError as exc:      # the agent closed the connection (e.g. a request it refused)
        print(f"tetra: the agent closed the control connection: {exc.strerror or exc}", file=err)
        return 1


def _remote(args, client, out, err, content: str | None = None) -> int:
    if args.tp_command == "list":
        answer = client.call("policy_list")
        if not answer.get("ok"):
            print(f"tetra: {answer.get('error')}", file=err)
            return 1
        if args.output == "json":
            print(json.dumps(answer["policies"], indent=2), file=out)
        else:
            print(render_list(answer["policies"]), file=out)
        return 0
    if args.tp_command == "add":
        filename = args.name or os.path.basename(args.file)
        if not filename.endswith((".yaml", ".yml")):
            filename += ".yaml"
        answer = client.call("policy_add", filename=filename, content=content)
        if not answer.get("ok"):
            print(f"tetra: {answer.get('error')}", file=err)
            for line in answer.get("errors", []):
                print(f"  {line}", file=err)
            return 1
        for p in answer.get("policies", []):
            print(f"added {p['name']} ({answer['file']}): {p['state']}", file=out)
        return 0
    if args.tp_command in ("set-mode", "enable", "disable"):
        fields = {"mode": args.mode} if args.tp_command == "set-mode" else {}
        answer = client.call("policy_" + args.tp_command.replace("-", "_"), name=args.name, **fields)
        if not answer.get("ok"):
            print(f"tetra: {answer.get('error')}", file=err)
            for line in answer.get("errors", []):
                print(f"  {line}", file=err)
            return 1
        p = answer["policy"]
        kept = "" if answer.get("persisted") else " (until the agent stops: it has no policy directory)"
        print(f"{p['name']}: {p['state']}, mode {p['mode']}{kept}", file=out)
        return 0
    answer = client.call("policy_delete", name=args.name)
    if not answer.get("ok"):
        print(f"tetra: {answer.get('error')}", file=err)
        return 1
    print(f"deleted {answer['deleted']} ({answer['file']})", file=out)
    return 0


def render_list(policies: list[dict]) -> str:
    if not policies:
        return "no policies loaded"
    lines = []
    for p in policies:
        lines.append(f"{p['name']}  state={p['state']}  mode={p['mode']}  events={p['events']}  "
                     f"enforcements={p['enforcements']}  generation={p['generation']}")
        lines.append(f"  file: {p['file']}")
        for h in p["hooks"]:
            how = h["attach"] if h["active"] else f"NOT ACTIVE: {h['error']}"
            lines.append(f"  hook {h['hook']}: {how}  events={h['events']}")
        for e in p.get("pending_errors", []):
            lines.append(f"  newer file version rejected (this version keeps running): {e}")
    return "\n".join(lines)
