"""Hook event lines from fragments kept between events.

A flood of hook events mostly repeats itself: the same process (and parent),
hook, selector outcome and namespaces, with new argument values and a new
time.  The first event of such a group is rendered whole by
HookEventRenderer.render_full with place-holders for "args" and "time"; the
line is cut there into three fragments kept here, and every later event of
the group costs its arguments' JSON and its time:

    head + args + middle + time + end

Integer arguments' JSON is kept too, by value (a syscall's flags or fd take
few distinct values).  Strings, paths, buffers and network arguments are
rendered every time: redaction, interface and namespace names apply to them.

The group key holds everything render_full reads from the record besides
the arguments and the time: hook id, pid, thread, namespaces, action,
monitor flag, syscall number; and the process cache entry itself (an entry
never changes once created, and a new exec is a new entry).  Lines are the
same text render_full writes (tests/unit/test_hook_fragments.py compares
them).  Events with a return value or the host fields take render_full.
"""
from __future__ import annotations

from tetrahost.bpf.native import lib
from tetrahost.events.text import bytes_to_text
from tetrahost.export.encode import dumps
from tetrahost.export.hook_json import _NET_ARG_KEYS, render_arg

MAX_GROUPS = 4096           # bounded: cleared when full (a host has few active groups)
MAX_INT_ARGS = 4096
_ARGS_JSON = dumps("\0args\0")       # how the place-holders come out of the encoder
_TIME_JSON = dumps("\0time\0")[1:-1]


class HookFragments:
    def __init__(self, renderer):
        """renderer: the tetrahost.export.hook_json.HookEventRenderer it serves."""
        self.renderer = renderer
        self._groups: dict[tuple, tuple] = {}
        self._ints: dict[tuple, str] = {}

    def line(self, rec, hs, process) -> str:
        ns = rec.ns if type(rec.ns) is tuple else tuple(rec.ns)
        key = (rec.hook_id, rec.pid, rec.tid, ns, rec.action, rec.monitor, rec.syscall_nr)
        group = self._groups.get(key)
        if group is None or group[0] is not hs or group[1] is not process:
            group = self._new_group(key, rec, hs, process)
        _, _, plan, head, middle, end = group
        args = self._args(rec, plan, process)
        return f"{head}{args}{middle}{self.renderer.base.format_ktime(rec.ktime)}{end}"

    def _new_group(self, key, rec, hs, process) -> tuple:
        text = self.renderer.render_full(rec, hs, process, marks=True)
        head, rest = text.split(_ARGS_JSON, 1)
        middle, end = rest.split(_TIME_JSON, 1)
        plan = [(i, kind, arg) for i, (kind, arg) in enumerate(zip(hs.compiled.arg_kinds, hs.hook.args))
                if kind != lib.TH_ARG_NONE]
        if len(self._groups) >= MAX_GROUPS:
            self._groups.clear()
        group = self._groups[key] = (hs, process, plan, head, middle, end)
        return group

    def _args(self, rec, plan, process) -> str:
        r = self.renderer
        raws = rec.args
        parts = []
        for i, kind, arg in plan:
            raw = raws[i]
            if kind == lib.TH_ARG_INT:
                k = (id(arg), raw)
                text = self._ints.get(k)
                if text is None or text[0] is not arg:
                    if len(self._ints) >= MAX_INT_ARGS:
                        self._ints.clear()
                    text = self._ints[k] = (arg, dumps(render_arg(kind, arg, raw)))
                parts.append(text[1])
                continue
            redactor = r.base.redactor
            binary = bytes_to_text(process.binary) if process is not None and redactor is not None else ""
            parts.append(dumps(render_arg(kind, arg, raw, r.netns if kind in _NET_ARG_KEYS else None,
                                          redactor, binary)))
        return f"[{','.join(parts)}]"

