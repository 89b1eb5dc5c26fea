"""Hook event lines from fragments kept between events.

A flood of policy events repeats itself: the same process and parent, hook,
selector, action and namespaces, with new argument values and a new time.
The first event of such a group is rendered whole (HookEventRenderer.render_full)
with place-holders for "args" and "time"; the line is cut there into three
fragments, and every later event of the group costs only its arguments' JSON
and its time:

    head + args + middle + time + tail

The group key holds everything render_full reads from the record besides the
arguments and the time: hook, process cache entry (its fields never change
once created; a new exec is a new entry), thread, namespaces, selector,
action, monitor flag, syscall number and ABI.  Integer arguments' JSON is kept
by raw value (flags, fds and modes take few values); strings, paths, buffers
and network arguments are rendered every time (redaction, interface and
namespace names apply to them).  Records with a return value, stack traces or
an IMA hash, and lines with the host fields, take render_full.  The lines are
the text render_full writes (tests/unit/test_hook_fragments.py compares them).
"""
from __future__ import annotations

from tetrahost.bpf.native import lib
from tetrahost.events.text import bytes_to_text
from tetrahost.export.arg_json import NET_ARG_KEYS, render_arg
from tetrahost.export.encode import dumps

MAX_GROUPS = 4096           # bounded: cleared when full (a host has few active groups)
MAX_INTS = 4096
ARGS_MARK = "\0args\0"      # NULs: no policy text holds one (the validator refuses them)
TIME_MARK = "\0time\0"


class HookFragments:
    def __init__(self, renderer):
        """renderer: the HookEventRenderer whose lines these are."""
        self.renderer = renderer
        self._groups: dict[tuple, tuple] = {}
        self._ints: dict[tuple, str] = {}
        self._dumps = dumps
        self._render_arg, self._net_kinds = render_arg, NET_ARG_KEYS
        self._args_json = dumps(ARGS_MARK)
        self._time_json = dumps(TIME_MARK)

    @staticmethod
    def applies(rec) -> bool:
        return rec.retval is None and rec.kernel_stack_id < 0 and rec.user_stack_id < 0 and rec.ima_algo < 0

    def line(self, rec, hs, process) -> str:
        ns = rec.ns if type(rec.ns) is tuple else tuple(rec.ns)
        key = (id(hs), id(process), rec.tid, ns, rec.selector, rec.action, rec.monitor, rec.syscall_nr,
               rec.compat)
        group = self._groups.get(key)
        if group is None or group[0] is not hs or group[1] is not process:
            group = self._new_group(key, rec, hs, process)
        _, _, plan, head, middle, tail = group
        return f"{head}{self._args(rec, plan, process)}{middle}{self.renderer.base.format_ktime(rec.ktime)}{tail}"

    def _new_group(self, key, rec, hs, process) -> tuple:
        text = self.renderer.render_full(rec, hs, process, marks=True)
        head, rest = text.split(self._args_json, 1)
        # the time is the last string of the line: its quotes stay in the fragments
        middle, tail = rest.rsplit(self._time_json[1:-1], 1)
        plan = [(i, kind, arg) for i, (kind, arg) in enumerate(zip(hs.compiled.arg_kinds, hs.hook.args))
                if kind != lib.TH_ARG_NONE]
        if len(self._groups) >= MAX_GROUPS:
            self._groups.clear()
        group = self._groups[key] = (hs, process, plan, head, middle, tail)
        return group

    def _args(self, rec, plan, process) -> str:
        r, raws, ints, dumps, render_arg = self.renderer, rec.args, self._ints, self._dumps, self._render_arg
        parts = []
        for i, kind, arg in plan:
            raw = raws[i]
            if kind == lib.TH_ARG_INT:
                key = (id(arg), raw)
                kept = ints.get(key)
                if kept is None or kept[0] is not arg:
                    if len(ints) >= MAX_INTS:
                        ints.clear()
                    kept = ints[key] = (arg, dumps(render_arg(kind, arg, raw)))
                parts.append(kept[1])
                continue
            redactor = r.base.redactor
            binary = bytes_to_text(process.binary) if process is not None and redactor is not None else ""
            parts.append(dumps(render_arg(kind, arg, raw, r.netns if kind in self._net_kinds else None,
                                          redactor, binary)))
        return f"[{','.join(parts)}]"
