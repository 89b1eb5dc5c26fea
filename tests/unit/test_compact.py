import json

import pytest

from tetrahost.events.namespaces import HostNamespaces
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import Caps, Creds, ExecRecord, ExitRecord
from tetrahost.export.compact import CompactError, format_event
from tetrahost.export.tetragon_json import TetragonJSON


def proc(binary="/usr/bin/curl", arguments="https://example.org", **extra):
    p = {"exec_id": "x", "pid": 5, "binary": binary}
    if arguments:
        p["arguments"] = arguments
    p.update(extra)
    return p


def test_exec_line():
    ev = {"process_exec": {"process": proc()}, "node_name": "host1", "time": "t"}
    assert format_event(ev) == "🚀 process host1 /usr/bin/curl https://example.org"


def test_exit_lines_status_and_signal():
    ev = {"process_exit": {"process": proc()}, "node_name": "host1"}
    assert format_event(ev) == "💥 exit    host1 /usr/bin/curl https://example.org 0"
    ev["process_exit"]["status"] = 7
    assert format_event(ev).endswith("https://example.org 7")
    ev["process_exit"]["signal"] = "SIGKILL"
    assert format_event(ev) == "💥 exit    host1 /usr/bin/curl https://example.org SIGKILL"


def test_no_arguments_no_stray_spaces():
    ev = {"process_exit": {"process": proc("/bin/true", "")}, "node_name": "h"}
    assert format_event(ev) == "💥 exit    h /bin/true 0"


def test_sys_admin_trailer_is_right_aligned():
    p = proc(cap={"effective": ["CAP_SYS_ADMIN"]})
    line = format_event({"process_exec": {"process": p}, "node_name": "h"})
    assert line.startswith("🚀 process h /usr/bin/curl https://example.org ")
    assert line.endswith("🛑 CAP_SYS_ADMIN")
    assert len(line) == 121


def test_kprobe_lines():
    base = {"process": proc(arguments=""), "function_name": "__x64_sys_write",
            "args": [{"file_arg": {"path": "/etc/passwd"}}, {}, {"size_arg": "12"}]}
    assert format_event({"process_kprobe": base, "node_name": "h"}) == \
        "📝 write   h /usr/bin/curl /etc/passwd 12 bytes"
    other = {"process": proc(arguments=""), "function_name": "security_bprm_check",
             "action": "KPROBE_ACTION_SIGKILL"}
    assert format_event({"process_kprobe": other, "node_name": "h"}) == \
        "❓ syscall h /usr/bin/curl security_bprm_check 💥 SIGKILL"
    tcp = {"process": proc(arguments=""), "function_name": "tcp_connect",
           "args": [{"sock_arg": {"saddr": "10.0.0.1", "sport": 5000, "daddr": "1.1.1.1", "dport": 443}}]}
    assert format_event({"process_kprobe": tcp, "node_name": "h"}).endswith(
        "tcp 10.0.0.1:5000 -> 1.1.1.1:443")


def test_other_kinds():
    lsm = {"process_lsm": {"process": proc(arguments=""), "function_name": "file_open"}, "node_name": "h"}
    assert format_event(lsm) == "🔒 LSM     h /usr/bin/curl file_open"
    tp = {"process_tracepoint": {"process": proc(arguments=""), "subsys": "sched",
                                 "event": "sched_switch"}, "node_name": "h"}
    assert format_event(tp) == "⁉️ tracepoint h /usr/bin/curl sched sched_switch"


def test_timestamps_and_color():
    ev = {"process_exec": {"process": proc()}, "node_name": "h", "time": "2026-11-25T12:00:00Z"}
    assert format_event(ev, timestamps=True).startswith("2026-11-25T12:00:00Z 🚀 process h ")
    colored = format_event(ev, color=True)
    assert "\x1b[35m/usr/bin/curl\x1b[0m" in colored
    assert "\x1b[" not in format_event(ev)


@pytest.mark.parametrize("event", [
    {"node_name": "h"},
    {"process_foo": {}, "node_name": "h"},
    {"process_exec": {}, "node_name": "h"},
    {"process_exec": "nope"},
    [],
])
def test_unshowable_events_raise(event):
    with pytest.raises(CompactError):
        format_event(event)


def test_from_rendered_json_line():
    cache = ProcessCache("host1")
    r = TetragonJSON("host1", HostNamespaces.unknown(), boot_offset_ns=0)
    c = Creds(*(0,) * 8)
    ex = ExecRecord(1, 9, 9, 0, 0, 0, 0, c, Caps(0, 0, 0), (0,) * 10, b"/usr/bin/sleep",
                    [b"60", b"two words"], b"/")
    cache.handle(ex)
    line = r.render(cache.handle(ExitRecord(2, 9, 9, 9, 0)))
    assert format_event(json.loads(line)) == '💥 exit    host1 /usr/bin/sleep 60 "two words" SIGKILL'
