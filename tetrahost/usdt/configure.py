"""A USDT hook's kernel side from its binary: where the uprobe goes, where
each argument is (th_hook_config.usdt_args), and whether a Set can write.

Run when the hook attaches (HookSensor), so the program may be installed
after the policy; every failure is a UsdtError naming the file and point.
"""

from __future__ import annotations

import os
import stat

from tetrahost.bpf.native import lib
from tetrahost.policy.model import Hook

from .argspec import ArgSpecError, UsdtArg, parse_args
from .notes import UsdtError, UsdtTarget, find_target

MAX_BINARY_BYTES = 1 << 31        # notes are read from a copy of the file in memory


def locate(hook: Hook) -> tuple[UsdtTarget, tuple[UsdtArg, ...]]:
    """Find the point, check every declared argument and Set against the
    note: the target to attach to and where each argument is (what
    th_hook_config.usdt_args gets: tetrahost.sensors.hook_config)."""
    where = f"{hook.path}: USDT point {hook.name}"
    _check_file(hook.path)
    target = find_target(hook.path, hook.provider, hook.usdt_name)
    try:
        args = parse_args(target.note.args)
    except ArgSpecError as exc:
        raise UsdtError(f"{where}: {exc}") from None
    for pos, arg in enumerate(hook.args):
        if arg.index >= len(args):
            raise UsdtError(f"{where}: args[{pos}].index {arg.index}, but the point has {len(args)} "
                            f"argument(s) ({target.note.args or 'none'})")
    for s, sel in enumerate(hook.selectors):
        for action in sel.match_actions:
            if action.action == "Set":
                _check_settable(where, f"selectors[{s}]", args, action.arg_index)
    return target, tuple(args[:lib.TH_MAX_ARGS])


def resolve(hook: Hook, cfg) -> UsdtTarget:
    """locate(), the argument locations written into cfg.usdt_args (a
    `struct th_hook_config` cdata)."""
    target, args = locate(hook)
    for i, spec in enumerate(args):
        spec.fill(cfg.usdt_args[i])
    return target


def _check_settable(where: str, spath: str, args: list[UsdtArg], index: int) -> None:
    spec = args[index] if index < len(args) else None
    if spec is None:
        raise UsdtError(f"{where}: {spath}: Set argIndex {index}, but the point has {len(args)} argument(s)")
    if not spec.in_memory:
        kind = "a constant" if spec.loc == lib.TH_USDT_CONST else f"in register %{spec.text.split('%')[-1]}"
        raise UsdtError(f"{where}: {spath}: Set argIndex {index}: the argument is {kind} ({spec.text!r}), "
                        "not in memory: not writable (Set writes arguments the program keeps in memory)")


def _check_file(path: str) -> None:
    """A regular file of a sane size: reading a FIFO would block the agent."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsdtError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsdtError(f"{path}: not a regular file")
    if st.st_size > MAX_BINARY_BYTES:
        raise UsdtError(f"{path}: {st.st_size} bytes, larger than the {MAX_BINARY_BYTES} read for USDT notes")
