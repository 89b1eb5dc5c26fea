"""Tetragon-shaped JSON lines for process_exec / process_exit events.

The shape follows Tetragon's JSON export (protobuf JSON with the proto's
snake_case names, compact separators), so tools written for Tetragon's
export read ours:

  {"process_exec":{"process":{...},"parent":{...}},"node_name":"h","time":"..."}
  {"process_exit":{"process":{...},"parent":{...},"signal":"SIGKILL","status":3,
                   "time":"..."},"node_name":"h","time":"..."}

Zero values are omitted as protobuf JSON omits them: an exit with status 0 has
no "status", one not ended by a signal no "signal", a namespace not the host's
has no "is_host" (read it as `.get("is_host", False)`), empty "arguments",
"flags", "cwd" and empty capability sets are left out.  Fields that Tetragon
wraps (pid, uid, tid, auid, credentials) are always present, 0 included.

Process object fields, in Tetragon's order: exec_id, pid, uid, cwd, binary,
arguments, flags, start_time, auid, docker (the container id, when the
process is in a container), parent_exec_id, cap, ns, tid, process_credentials.
As in Tetragon, "cap" and "process_credentials" are written only with
`export.process_cred` (Tetragon's --enable-process-cred) and "ns" only with
`export.process_ns` (--enable-process-ns); both are off by default, as there.
Nothing else: every line parses with Tetragon's own schema
(tetrahost/export/conformance.py).  Capability names are the values of
Tetragon's CapabilitiesType enum, which spells bit 1 "DAC_OVERRIDE" (no CAP_
prefix) and every other bit CAP_*; bits the enum does not have are left out.

Host context that Tetragon has no field for (cgroup path, systemd unit and
slice, workload namespace, container runtime and name) is written only with
`export.host_fields = true`, in one top-level "tetrahost" member:
  "tetrahost":{"process":{"cgroup","unit","slice","workload_namespace",
               "container":{"id","runtime","name"}},"parent":{...}}
(docs/outputs.md, "Host fields").  journald, filters and `tetra getevents`
get the same facts from EventMeta either way.

Redaction (tetrahost.export.redaction): when a Redactor is set, "arguments"
is redacted as it is rendered, so no exporter ever sees the secret.

arguments: argv[1:] joined with single spaces.  As Tetragon does, an argument
containing a space is written in double quotes; we also quote an argument that
is empty or contains a tab, newline or double quote, and inside quotes escape
'"' and '\\' with a backslash, so the string splits back unambiguously.
(Tetragon does not escape, and puts a stray space before a quoted first
argument; we do neither.)

Bytes: paths and arguments are bytes from the kernel, not always UTF-8.  They
become text by tetrahost.events.text.bytes_to_text (bytes that are not UTF-8
as "\\xNN", documented in docs/outputs.md), so every line is valid UTF-8 and
text_to_bytes(json.loads(line)[...]["binary"]) gives back the original bytes.
For "arguments", undo the quoting above first, then text_to_bytes each argument.

Time: kernel ktime is CLOCK_BOOTTIME ns.  The wall clock offset is measured
once at start: time.time_ns() minus the midpoint of two CLOCK_BOOTTIME reads
bracketing it, keeping the narrowest of a few tries.  Times are RFC 3339 UTC
with 0, 3, 6 or 9 fraction digits, as protobuf JSON prints Timestamps.  A
wall clock step after start (NTP) is not followed: remeasure to pick it up.

Speed: an entry's process object is rendered to JSON once and the string is
kept on the entry (entries never change after creation), so a parent shared
by many events costs nothing after its first; an event line is one f-string.
"""
from __future__ import annotations

import json
import time
from functools import lru_cache

from tetrahost.events.cgroups import Workload
from tetrahost.events.meta import process_texts
from tetrahost.events.namespaces import HostNamespaces
from tetrahost.events.proccache import ProcessEntry, ProcessEvent
from tetrahost.events.records import NAMESPACE_KINDS
from tetrahost.events.text import bytes_to_text, os_text
from tetrahost.export.compact import process_line
from tetrahost.export.encode import dumps
from tetrahost.export.process_values import (  # noqa: F401  (their home before: importers keep working)
    CAPABILITY_NAMES, KERNEL_CAPABILITY_NAMES, capability_names, format_arguments, format_fraction,
    json_str, measure_boot_offset_ns, signal_name,
)
from tetrahost.export.terminal import terminal_text

_dumps = dumps      # tetrahost.export.encode: orjson when installed, same text
_SYS_ADMIN = 1 << KERNEL_CAPABILITY_NAMES.index("CAP_SYS_ADMIN")     # the capability the compact line marks


class TetragonJSON:
    """Renders ProcessEvents as Tetragon JSON lines (without the trailing newline)."""

    def __init__(self, node_name: str, host_ns: HostNamespaces | None = None,
                 boot_offset_ns: int | None = None, *, host_fields: bool = False, redactor=None,
                 process_cred: bool = False, process_ns: bool = False):
        """host_fields: add the "tetrahost" member (export.host_fields);
        redactor: a tetrahost.export.redaction.Redactor, or None;
        process_cred / process_ns: write "cap" and "process_credentials" /
        "ns" in process objects (export.process_cred / process_ns).  Set
        before the first event: an entry's rendering is kept on it."""
        self.node_name = node_name
        self.host_fields = host_fields
        self.process_cred = process_cred
        self.process_ns = process_ns
        self.stack_addresses = False    # export.stack_addresses: raw addresses in stack traces
        self.redactor = redactor
        self.host_ns = host_ns or HostNamespaces.unknown()
        self.boot_offset_ns = measure_boot_offset_ns() if boot_offset_ns is None else boot_offset_ns
        self._node_json = _dumps(node_name)
        self._node_shown = terminal_text(node_name)      # in compact lines
        self._second = -1
        self._second_text = ""
        self._last_wall, self._last_time = -1, ""
        self._ns_cache: dict[tuple[int, ...], dict] = {}
        self._ns_json: dict[tuple[int, ...], str] = {}

    # ---- time --------------------------------------------------------------
    def wall_ns(self, ktime: int) -> int:
        return self.boot_offset_ns + ktime

    def format_ktime(self, ktime: int) -> str:
        wall = self.boot_offset_ns + ktime
        if wall == self._last_wall:     # an exec's time is its process's start_time
            return self._last_time
        seconds, nanos = divmod(wall, 1_000_000_000)
        if seconds != self._second:   # events come in bursts within one second
            self._second = seconds
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        if nanos % 1_000:       # the usual case for kernel times: all nine digits
            text = f"{self._second_text}.{nanos:09d}Z"
        else:
            text = f"{self._second_text}{format_fraction(nanos)}Z"
        self._last_wall, self._last_time = wall, text
        return text

    # ---- process objects ---------------------------------------------------
    def _ns_object(self, inodes: tuple[int, ...]) -> dict:
        ns = self._ns_cache.get(inodes)
        if ns is not None:
            return ns
        if len(self._ns_cache) >= 4096:
            self._ns_cache.clear()   # a host has few distinct namespace sets; bound anyway
        ns = self._ns_cache[inodes] = {}
        for kind, inum, host in zip(NAMESPACE_KINDS, inodes, self.host_ns.is_host_all(inodes)):
            if not inum:
                ns[kind] = {}
            elif host:
                ns[kind] = {"inum": inum, "is_host": True}
            else:
                ns[kind] = {"inum": inum}
        return ns

    @staticmethod
    @lru_cache(maxsize=1024)
    def _cap_object(permitted: int, effective: int, inheritable: int) -> dict:
        cap = {}
        if permitted:
            cap["permitted"] = capability_names(permitted)
        if effective:
            cap["effective"] = capability_names(effective)
        if inheritable:
            cap["inheritable"] = capability_names(inheritable)
        return cap

    @staticmethod
    @lru_cache(maxsize=1024)
    def _workload_fields(workload: Workload) -> tuple[tuple[str, object], ...]:
        """The host fields of a workload (export.host_fields)."""
        # Names come from the cgroup tree as the OS gave them (surrogateescape): os_text.
        fields: list[tuple[str, object]] = []
        if workload.unit:
            fields.append(("unit", os_text(workload.unit)))
        if workload.slice:
            fields.append(("slice", os_text(workload.slice)))
        if workload.namespace:
            fields.append(("workload_namespace", os_text(workload.namespace)))
        if workload.container_runtime:
            container = {"runtime": workload.container_runtime}
            if workload.container_id:
                container["id"] = os_text(workload.container_id)
            if workload.container_name:
                container["name"] = os_text(workload.container_name)
            fields.append(("container", container))
        return tuple(fields)

    def _head(self, e: ProcessEntry) -> dict:
        """The per-process fields of a "process" object, before cap/ns/creds."""
        head: dict = {"exec_id": e.exec_id, "pid": e.pid, "uid": e.creds.uid}
        if e.cwd:
            head["cwd"] = bytes_to_text(e.cwd)
        binary, _, container, _ = process_texts(e)
        if binary:
            head["binary"] = binary
        if e.args:
            arguments = format_arguments(e.args)
            if self.redactor is not None:
                arguments = self.redactor.text(head.get("binary", ""), arguments)
            head["arguments"] = arguments
        if e.flags:
            head["flags"] = e.flags
        head["start_time"] = self.format_ktime(e.ktime)
        if e.auid is not None:
            head["auid"] = e.auid
        if container:
            head["docker"] = container
        if e.parent_exec_id:
            head["parent_exec_id"] = e.parent_exec_id
        return head

    def _head_json(self, e: ProcessEntry) -> str:
        """_dumps(self._head(e)) without its closing brace, written directly:
        the same members in the same order (the unit tests hold the two equal)."""
        binary, _, container, _ = process_texts(e)
        text = f'{{"exec_id":"{e.exec_id}","pid":{e.pid},"uid":{e.creds.uid}'
        if e.cwd:
            text += ',"cwd":' + json_str(bytes_to_text(e.cwd))
        if binary:
            text += ',"binary":' + json_str(binary)
        if e.args:
            arguments = format_arguments(e.args)
            if self.redactor is not None:
                arguments = self.redactor.text(binary, arguments)
            text += ',"arguments":' + json_str(arguments)
        if e.flags:
            text += f',"flags":"{e.flags}"'
        text += f',"start_time":"{self.format_ktime(e.ktime)}"'
        if e.auid is not None:
            text += f',"auid":{e.auid}'
        if container:
            text += ',"docker":' + json_str(container)
        if e.parent_exec_id:
            text += f',"parent_exec_id":"{e.parent_exec_id}"'
        return text

    def process_dict(self, e: ProcessEntry) -> dict:
        """The Tetragon "process" object of an entry (shared sub-objects: do not mutate)."""
        d = self._head(e)
        if self.process_cred:
            caps = e.caps
            cap = self._cap_object(caps.permitted, caps.effective, caps.inheritable)
            if cap:
                d["cap"] = cap
        if self.process_ns:
            d["ns"] = self._ns_object(e.ns)
        d["tid"] = e.tid
        if self.process_cred:
            c = e.creds
            d["process_credentials"] = {
                "uid": c.uid, "gid": c.gid, "euid": c.euid, "egid": c.egid,
                "suid": c.suid, "sgid": c.sgid, "fsuid": c.fsuid, "fsgid": c.fsgid,
            }
        return d

    def host_process(self, e: ProcessEntry) -> dict:
        """The host fields of a process (the "tetrahost" member's "process")."""
        return json.loads(self._host_json(e.cgroup, e.workload))

    @staticmethod
    @lru_cache(maxsize=4096)
    def _host_json(cgroup: str, workload: Workload) -> str:
        extras: dict = {"cgroup": os_text(cgroup)} if cgroup else {}
        extras.update(TetragonJSON._workload_fields(workload))
        return _dumps(extras)

    def host_member(self, process: ProcessEntry | None, parent: ProcessEntry | None,
                    extra: str = "") -> str:
        """',"tetrahost":{...}' when host fields are on, else "".  extra: more
        members as JSON text without braces (hook events)."""
        if not self.host_fields:
            return ""
        parts = []
        if process is not None:
            parts.append(f'"process":{self._host_json(process.cgroup, process.workload)}')
        if parent is not None:
            parts.append(f'"parent":{self._host_json(parent.cgroup, parent.workload)}')
        if extra:
            parts.append(extra)
        return f',"tetrahost":{{{",".join(parts)}}}'

    def process_json(self, e: ProcessEntry) -> str:
        """process_dict(e) as JSON, built once per entry and kept on it.

        Same text as _dumps(process_dict(e)), but only the per-process head
        goes through the encoder; cap/ns/workload objects repeat across
        processes, so their JSON is cached and spliced in.
        """
        text = e.rendered
        if text is not None:
            return text
        cap = creds = ns = ""
        if self.process_cred:
            caps, c = e.caps, e.creds
            cap = self._cap_json(caps.permitted, caps.effective, caps.inheritable)
            creds = (f',"process_credentials":{{"uid":{c.uid},"gid":{c.gid},"euid":{c.euid},'
                     f'"egid":{c.egid},"suid":{c.suid},"sgid":{c.sgid},"fsuid":{c.fsuid},'
                     f'"fsgid":{c.fsgid}}}')
        if self.process_ns:
            ns = self._ns_json.get(e.ns)
            if ns is None:
                if len(self._ns_json) >= 4096:
                    self._ns_json.clear()
                ns = self._ns_json[e.ns] = ',"ns":' + _dumps(self._ns_object(e.ns))
        text = e.rendered = f'{self._head_json(e)}{cap}{ns},"tid":{e.tid}{creds}}}'
        return text

    @staticmethod
    @lru_cache(maxsize=1024)
    def _cap_json(permitted: int, effective: int, inheritable: int) -> str:
        cap = TetragonJSON._cap_object(permitted, effective, inheritable)
        return f',"cap":{_dumps(cap)}' if cap else ""

    # ---- events ------------------------------------------------------------
    def render(self, ev: ProcessEvent) -> str:
        """One JSON line (no newline) for an exec or exit event."""
        # The process objects (up to kilobytes each) are copied once, into the line.
        process = ev.process.rendered or self.process_json(ev.process)
        parent = ev.parent
        if parent is None:
            key = pjson = ""
        else:
            key, pjson = ',"parent":', parent.rendered or self.process_json(parent)
        when = self.format_ktime(ev.ktime)
        host = self.host_member(ev.process, parent) if self.host_fields else ""
        if ev.kind == "exec":
            return (f'{{"process_exec":{{"process":{process}{key}{pjson}}},'
                    f'"node_name":{self._node_json},"time":"{when}"{host}}}')
        if ev.kind == "exit":
            extra = ""
            if ev.signal:
                extra += f',"signal":"{signal_name(ev.signal)}"'
            if ev.status:
                extra += f',"status":{ev.status}'
            return (f'{{"process_exit":{{"process":{process}{key}{pjson}{extra},"time":"{when}"}},'
                    f'"node_name":{self._node_json},"time":"{when}"{host}}}')
        raise ValueError(f"unknown event kind {ev.kind!r}")

    def compact_line(self, ev: ProcessEvent) -> str:
        """The compact one-liner of the event (journald's MESSAGE, compact
        stdout): the line export/compact.py makes of event_dict(ev), made from
        its pieces (the unit tests hold the two equal).  The process's pieces,
        terminal-safe and redacted, are made once per entry and kept on it:
        its exec and its exit show the same."""
        e = ev.process
        shown = e.compact
        if shown is None:
            binary = process_texts(e)[0]
            arguments = format_arguments(e.args) if e.args else ""
            if arguments and self.redactor is not None:
                arguments = self.redactor.text(binary, arguments)
            shown = e.compact = (terminal_text(binary), terminal_text(arguments))
        binary, arguments = shown
        sys_admin = self.process_cred and bool(e.caps.effective & _SYS_ADMIN)
        if ev.kind == "exec":
            return process_line("process_exec", self._node_shown, binary, (arguments,), sys_admin)
        outcome = signal_name(ev.signal) if ev.signal else str(ev.status)
        return process_line("process_exit", self._node_shown, binary, (arguments, outcome), sys_admin)

    def _event_envelope(self, ev: ProcessEvent, body: dict) -> dict:
        """{"process_exec"|"process_exit": body, node_name, time}, an exit's body
        given its signal, status and time."""
        when = self.format_ktime(ev.ktime)
        if ev.kind == "exec":
            return {"process_exec": body, "node_name": self.node_name, "time": when}
        if ev.kind == "exit":
            if ev.signal:
                body["signal"] = signal_name(ev.signal)
            if ev.status:
                body["status"] = ev.status
            body["time"] = when
            return {"process_exit": body, "node_name": self.node_name, "time": when}
        raise ValueError(f"unknown event kind {ev.kind!r}")

    def event_dict(self, ev: ProcessEvent) -> dict:
        """The same event as a dict (for the compact formatter and other exporters)."""
        body: dict = {"process": self.process_dict(ev.process)}
        if ev.parent is not None:
            body["parent"] = self.process_dict(ev.parent)
        out = self._event_envelope(ev, body)
        if self.host_fields:
            host = {"process": self.host_process(ev.process)}
            if ev.parent is not None:
                host["parent"] = self.host_process(ev.parent)
            out["tetrahost"] = host
        return out
