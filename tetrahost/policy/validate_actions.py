"""Validate matchActions / matchReturnActions.

tetrahost implements Post (with rate limiting), NoPost, Sigkill, Signal,
Override, TrackSock, UntrackSock, (on USDT points) Set, NotifyEnforcer (with
spec.enforcers), and in user space DnsLookup and GetUrl; every other Tetragon
action is rejected by name. Parameters that belong
to another action are ignored with a warning, as Tetragon ignores them (its own
examples put argError on Sigkill).
"""

from __future__ import annotations

import re

from . import limits
from .errors import shown
from .context import Context, check_fields, did_you_mean, expect_map, get_bool, get_int, get_list, get_str, join
from .hookshape import HookShape
from .model import Action
from .vocab import (RATE_LIMIT_SCOPES, SOCKET_ACTIONS, SUPPORTED_ACTIONS, TETRAGON_ONLY_ACTIONS,
                    USER_SPACE_ACTIONS, ArgKind)
from .yamlnodes import YNode

# Parameter -> the action it belongs to.
_PARAMETER_OWNER = {
    "argError": "Override", "argSig": "Signal",
    "rateLimit": "Post", "rateLimitScope": "Post",
    "kernelStackTrace": "Post", "userStackTrace": "Post", "imaHash": "Post",
    "argFd": "FollowFD/UnfollowFD/CopyFD", "argName": "FollowFD/CopyFD", "argUrl": "GetUrl",
    "argFqdn": "DnsLookup", "argSock": "TrackSock/UntrackSock", "argIndex": "Set",
    "argValue": "Set", "argRegs": "Override on uprobes",
}
_POST_FEATURES_NOT_SUPPORTED: dict[str, str] = {}
_IMA_ARG_TYPES = ("file", "linux_binprm")
_STACK_TRACES = {"kernelStackTrace": "kernel_stack_trace", "userStackTrace": "user_stack_trace"}
_RATE_LIMIT = re.compile(r"^([0-9]+)([smh]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def validate_actions(ctx: Context, selector: YNode, key: str, path: str, shape: HookShape) -> list[Action]:
    actions: list[Action] = []
    for i, entry in enumerate(get_list(ctx, selector, key, path)):
        apath = f"{join(path, key)}[{i}]"
        if not expect_map(ctx, entry, apath):
            continue
        action = _validate_action(ctx, entry, apath, shape, key == "matchReturnActions")
        if action is not None:
            actions.append(action)
    names = {a.action for a in actions}
    if {"Post", "NoPost"} <= names:
        ctx.error(selector.key_line(key), join(path, key), "Post and NoPost contradict each other", "conflict")
    if "NoPost" in names and names & USER_SPACE_ACTIONS:
        ctx.error(selector.key_line(key), join(path, key), f"{'/'.join(sorted(names & USER_SPACE_ACTIONS))} "
                  "is done by the agent on the posted event: NoPost would suppress it", "conflict")
    if key == "matchReturnActions" and names & USER_SPACE_ACTIONS:
        ctx.error(selector.key_line(key), join(path, key), "DnsLookup/GetUrl are matchActions, not "
                  "matchReturnActions, in tetrahost", "not-supported", "user actions at return")
    return actions


def _validate_action(ctx: Context, entry: YNode, path: str, shape: HookShape, is_return: bool) -> Action | None:
    errors_before = len(ctx.errors)
    check_fields(ctx, entry, path, ("action", *_PARAMETER_OWNER))
    name = get_str(ctx, entry, "action", path, required=True)
    if not name:
        return None
    line = entry.key_line("action")
    if name in TETRAGON_ONLY_ACTIONS:
        ctx.error(line, join(path, "action"), f"action {name} is not supported by tetrahost (yet)",
                  "unsupported-action", name)
        return None
    if name not in SUPPORTED_ACTIONS:
        ctx.error(line, join(path, "action"), f'unknown action {shown(name)} (expected one of: '
                  f"{', '.join(SUPPORTED_ACTIONS)}){did_you_mean(name, SUPPORTED_ACTIONS)}",
                  "unknown-action", name)
        return None

    for key in entry.entries:
        owner = _PARAMETER_OWNER.get(key)
        if owner is None or key == "action" or owner == name:
            continue
        if name == "NotifyEnforcer" and key in ("argError", "argSig"):
            continue
        if owner == "Post":
            ctx.error(entry.key_line(key), join(path, key), f"{key} is only valid with the Post action",
                      "invalid", key)
        else:
            ctx.warn(entry.key_line(key), join(path, key), f"{key} belongs to {owner}, it does nothing for "
                     f"{name} and is ignored (as in Tetragon)")

    fields: dict = {}
    if name == "Override":
        fields["arg_error"] = _override_error(ctx, entry, path, shape, is_return)
    elif name == "Signal":
        fields["arg_sig"] = get_int(ctx, entry, "argSig", path, required=True, minimum=1, maximum=limits.MAX_SIGNAL)
    elif name == "Post":
        fields.update(_post_parameters(ctx, entry, path))
        fields.update(_stack_traces(ctx, entry, path, shape, is_return))
        fields.update(_ima_hash(ctx, entry, path, shape, is_return))
    elif name in SOCKET_ACTIONS:
        fields["arg_sock"] = _sock_argument(ctx, entry, path, shape, name)
    elif name == "Set":
        fields.update(_set_parameters(ctx, entry, path, shape, is_return))
    elif name == "DnsLookup":
        fields["arg_fqdn"] = _fqdn(ctx, entry, path)
    elif name == "GetUrl":
        fields["arg_url"] = _url(ctx, entry, path)
    elif name == "NotifyEnforcer":
        fields.update(_notify_enforcer(ctx, entry, path, shape, is_return))
    if len(ctx.errors) != errors_before:
        return None
    return Action(action=name, source=ctx.loc(entry, path), **fields)


def _override_error(ctx: Context, entry: YNode, path: str, shape: HookShape, is_return: bool) -> int | None:
    line = entry.key_line("action")
    if shape.kind == "tracepoint":
        ctx.error(line, join(path, "action"), "Override needs a function to override; a tracepoint "
                  "has none (use a kprobe or an LSM hook)", "invalid", "Override at tracepoint")
    if shape.kind in ("uprobe", "usdt"):
        ctx.error(line, join(path, "action"), f"Override on a {shape.kind} (setting registers, argRegs) is not "
                  "supported by tetrahost; Sigkill, Signal, Post and NoPost are", "not-supported",
                  f"Override on {shape.kind}s")
    if is_return:
        ctx.error(line, join(path, "action"), "Override cannot run in matchReturnActions: the function "
                  "has already run", "invalid", "Override at return")
    value = get_int(ctx, entry, "argError", path, minimum=-(1 << 31), maximum=(1 << 31) - 1)
    if entry.get("argError") is None:
        ctx.warn(line, path, "Override without argError makes the function return 0 (success)")
        return 0
    return value


def _stack_traces(ctx: Context, entry: YNode, path: str, shape: HookShape, is_return: bool) -> dict:
    """kernelStackTrace / userStackTrace: the stacks where the hook fired, in
    the event (Tetragon renders them on kprobe events only: ProcessKprobe)."""
    fields = {}
    for key, field in _STACK_TRACES.items():
        if not get_bool(ctx, entry, key, path):
            continue
        if shape.kind != "kprobe":
            ctx.error(entry.key_line(key), join(path, key), f"{key} is reported on kprobe events only (Tetragon's "
                      f"ProcessKprobe has the field), not on a {shape.kind}", "invalid", f"{key} on {shape.kind}")
        elif is_return:
            ctx.error(entry.key_line(key), join(path, key), f"{key} in matchReturnActions is not supported by "
                      "tetrahost yet (the stack is taken at the entry)", "not-supported", f"{key} at return")
        fields[field] = True
    return fields


def _ima_hash(ctx: Context, entry: YNode, path: str, shape: HookShape, is_return: bool) -> dict:
    """imaHash: the IMA hash of the hook's file/linux_binprm argument, on LSM
    hooks as in Tetragon (ProcessLsm.ima_hash).  Accepted here; whether this
    kernel can compute it is said at attach (tetrahost/sensors/attach.py):
    it needs BPF-LSM and the sleepable IMA helper."""
    if not get_bool(ctx, entry, "imaHash", path):
        return {}
    line, ipath = entry.key_line("imaHash"), join(path, "imaHash")
    if shape.kind != "lsm":
        ctx.error(line, ipath, f"imaHash is reported on LSM hook events only (Tetragon's ProcessLsm has the "
                  f"field), not on a {shape.kind}", "invalid", f"imaHash on {shape.kind}")
    elif is_return:
        ctx.error(line, ipath, "imaHash in matchReturnActions: LSM hooks have no return actions", "invalid",
                  "imaHash at return")
    elif not any(a.base_type in _IMA_ARG_TYPES for a in shape.args.values()):
        ctx.error(line, ipath, "imaHash hashes the hook's file or linux_binprm argument: declare one in args",
                  "invalid", "imaHash without a file argument")
    elif getattr(shape.args.get(0), "base_type", "") not in _IMA_ARG_TYPES:
        ctx.warn(line, ipath, "tetrahost hashes the hook's first argument (index 0) when it is a file or "
                 "linux_binprm: the hook and its other actions work, its events carry no ima_hash")
    return {"ima_hash": True}


def _notify_enforcer(ctx: Context, entry: YNode, path: str, shape: HookShape, is_return: bool) -> dict:
    """argError (the enforced call's return, 0: unchanged) and argSig (0: none)."""
    line = entry.key_line("action")
    if not shape.has_enforcer:
        ctx.error(line, join(path, "action"), "NotifyEnforcer needs spec.enforcers: the enforcer is what "
                  "acts on the note, at its syscalls", "invalid", "NotifyEnforcer without enforcers")
    if is_return:
        ctx.error(line, join(path, "action"), "NotifyEnforcer in matchReturnActions is not supported by "
                  "tetrahost yet", "not-supported", "NotifyEnforcer at return")
    error = get_int(ctx, entry, "argError", path, minimum=-4095, maximum=0)
    sig = get_int(ctx, entry, "argSig", path, minimum=1, maximum=limits.MAX_SIGNAL)
    if entry.get("argError") is None and entry.get("argSig") is None:
        ctx.error(line, path, "NotifyEnforcer needs argError, argSig or both", "invalid",
                  "NotifyEnforcer without arguments")
    return {"arg_error": error or 0, "arg_sig": sig or 0}


def _sock_argument(ctx: Context, entry: YNode, path: str, shape: HookShape, name: str) -> int | None:
    """argSock: the position in `args` of a sock/socket argument."""
    position = get_int(ctx, entry, "argSock", path, minimum=0)
    if position is None:
        if entry.get("argSock") is not None:
            return None              # present but invalid: get_int said why
        position = 0                 # Tetragon's default
    default = " (argSock defaults to 0)" if entry.get("argSock") is None else ""
    by_position = {shape.positions[key]: arg for key, arg in shape.args.items() if key in shape.positions}
    arg = by_position.get(position)
    if arg is None:
        ctx.error(entry.key_line("argSock"), join(path, "argSock"), f"{name}: argSock {position} names no "
                  f"argument (the hook has {len(by_position)})", "invalid", "argSock")
    elif arg.base_type not in ("sock", "socket"):
        ctx.error(entry.key_line("argSock"), join(path, "argSock"), f"{name}: args[{position}] is of type "
                  f"{arg.type}, not sock or socket{default}", "invalid", "argSock")
    return position


def _set_parameters(ctx: Context, entry: YNode, path: str, shape: HookShape, is_return: bool) -> dict:
    """Set: argIndex names a declared integer argument of a USDT point (by its
    index, as args[].index), argValue the value written into it.  Whether the
    argument is in memory (writable) or in a register is only known from the
    binary's note: the attach says so."""
    line = entry.key_line("action")
    if shape.kind != "usdt":
        ctx.error(line, join(path, "action"), "Set writes an argument of a USDT point; only spec.usdts "
                  "hooks support it in tetrahost", "not-supported", "Set outside usdts")
        return {}
    if is_return:
        ctx.error(line, join(path, "action"), "Set cannot run in matchReturnActions", "invalid", "Set at return")
    index = get_int(ctx, entry, "argIndex", path, required=True, minimum=0, maximum=limits.MAX_KPROBE_ARG_INDEX)
    value = get_int(ctx, entry, "argValue", path, required=True, minimum=-(1 << 63), maximum=(1 << 63) - 1)
    if index is not None:
        arg = shape.args.get(index)
        ipath = join(path, "argIndex")
        if arg is None and index not in shape.rejected:
            ctx.error(entry.key_line("argIndex"), ipath, f"Set: argIndex {index} names no argument in args "
                      "(declare the USDT argument it writes)", "invalid", "argIndex")
        elif arg is not None and arg.kind is not ArgKind.INTEGER:
            ctx.error(entry.key_line("argIndex"), ipath, f"Set: argument {index} is of type {arg.type}; Set "
                      "writes integers", "invalid", "argIndex")
    return {"arg_index": index, "arg_value": value}


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#][^\s]*)?$")


def _fqdn(ctx: Context, entry: YNode, path: str) -> str:
    """argFqdn: a host name (labels of letters, digits and hyphens)."""
    name = get_str(ctx, entry, "argFqdn", path, required=True)
    labels = name.rstrip(".").split(".") if name else []
    if name and (len(name) > 253 or not all(_HOST_LABEL.match(label) for label in labels)):
        ctx.error(entry.key_line("argFqdn"), join(path, "argFqdn"), f"{shown(name)} is not a host name",
                  "invalid-value", "argFqdn")
        return ""
    return name


def _url(ctx: Context, entry: YNode, path: str) -> str:
    """argUrl: an http:// or https:// URL (fetched with GET)."""
    url = get_str(ctx, entry, "argUrl", path, required=True)
    if url and (len(url) > 2048 or not _URL.match(url)):
        ctx.error(entry.key_line("argUrl"), join(path, "argUrl"), f"{shown(url)} is not an http:// or https:// "
                  "URL", "invalid-value", "argUrl")
        return ""
    return url


def _post_parameters(ctx: Context, entry: YNode, path: str) -> dict:
    fields: dict = {}
    for key, message in _POST_FEATURES_NOT_SUPPORTED.items():
        if get_bool(ctx, entry, key, path):
            ctx.error(entry.key_line(key), join(path, key), message, "not-supported", key)
    rate_limit = get_str(ctx, entry, "rateLimit", path)
    if rate_limit:
        match = _RATE_LIMIT.match(rate_limit)
        if match is None or int(match.group(1)) == 0:
            ctx.error(entry.key_line("rateLimit"), join(path, "rateLimit"),
                      f'{shown(rate_limit)} is not a rate limit (a positive number of seconds, optionally '
                      'followed by s, m or h: "30", "5m", "1h")', "invalid-value", "rateLimit")
        elif len(match.group(1)) > 12 or _seconds(match) > limits.MAX_RATE_LIMIT_SECONDS:
            ctx.error(entry.key_line("rateLimit"), join(path, "rateLimit"),
                      f"{shown(rate_limit)} is out of range (at most {limits.MAX_RATE_LIMIT_SECONDS} "
                      f"seconds, {limits.MAX_RATE_LIMIT_SECONDS // 3600}h)", "range", "rateLimit")
        else:
            fields["rate_limit"] = rate_limit
            fields["rate_limit_seconds"] = _seconds(match)
    scope = get_str(ctx, entry, "rateLimitScope", path)
    if scope:
        spath = join(path, "rateLimitScope")
        if scope not in RATE_LIMIT_SCOPES:
            ctx.error(entry.key_line("rateLimitScope"), spath, f'unknown rateLimitScope {shown(scope)} '
                      f"(expected one of: {', '.join(RATE_LIMIT_SCOPES)})", "unknown-value", "rateLimitScope")
        elif not rate_limit:
            ctx.error(entry.key_line("rateLimitScope"), spath, "rateLimitScope needs rateLimit", "invalid")
        fields["rate_limit_scope"] = scope
    elif rate_limit:
        fields["rate_limit_scope"] = "thread"  # Tetragon's default scope
    return fields


def _seconds(rate_limit: re.Match) -> int:
    return int(rate_limit.group(1)) * _UNIT_SECONDS[rate_limit.group(2)]
