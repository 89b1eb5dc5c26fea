import base64
import json
import time

from tetrahost.events.namespaces import HostNamespaces
from tetrahost.events.proccache import ProcessCache
from tetrahost.events.records import NAMESPACE_KINDS, Caps, Creds, ExecRecord, ExitRecord
from tetrahost.events.text import text_to_bytes
from tetrahost.export.tetragon_json import (
    TetragonJSON, capability_names, format_arguments, format_fraction, measure_boot_offset_ns,
)

NODE = "host1"
HOST = tuple(4026531830 + i for i in range(10))
# 2026-11-25T12:00:00Z as wall clock; boot 1000 s before that
WALL_BASE = 1795608000 * 10**9
BOOT_OFFSET = WALL_BASE - 1000 * 10**9


def exec_rec(pid, ppid, ktime, binary=b"/usr/bin/curl", args=(b"https://example.org",),
             cwd=b"/home/u", ns=HOST, caps=Caps(0, 0, 0), creds=None, cgroup_id=0, **kw):
    return ExecRecord(ktime=ktime, pid=pid, tid=pid, ppid=ppid, auid=1000, parent_ktime=0,
                      cgroup_id=cgroup_id, creds=creds or Creds(1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007),
                      caps=caps, ns=ns, binary=binary, args=list(args), cwd=cwd, **kw)


def setup():
    cache = ProcessCache(NODE)
    renderer = TetragonJSON(NODE, HostNamespaces(HOST), boot_offset_ns=BOOT_OFFSET, process_cred=True,
                            process_ns=True)
    parent = cache.handle(exec_rec(100, 0, 500 * 10**9, binary=b"/usr/bin/bash", args=()))
    return cache, renderer, parent


def test_exec_line_shape():
    cache, r, _ = setup()
    ev = cache.handle(exec_rec(200, 100, 1000 * 10**9 + 123456789,
                               ns=HOST[:5] + (4026532000,) + HOST[6:],
                               caps=Caps(effective=1 << 21, permitted=(1 << 21) | 1, inheritable=0)))
    line = r.render(ev)
    assert "\n" not in line and " " not in line.replace("https://example.org", "")
    d = json.loads(line)
    assert set(d) == {"process_exec", "node_name", "time"}
    assert d["node_name"] == NODE
    assert d["time"] == "2026-11-25T12:00:00.123456789Z"
    p = d["process_exec"]["process"]
    parent = d["process_exec"]["parent"]
    assert list(p)[:3] == ["exec_id", "pid", "uid"]
    assert base64.b64decode(p["exec_id"]).decode() == f"{NODE}:{1000 * 10**9 + 123456789}:200"
    assert p["pid"] == 200 and p["tid"] == 200 and p["uid"] == 1000 and p["auid"] == 1000
    assert p["binary"] == "/usr/bin/curl"
    assert p["arguments"] == "https://example.org"
    assert p["cwd"] == "/home/u"
    assert p["flags"] == "execve"
    assert p["start_time"] == "2026-11-25T12:00:00.123456789Z"
    assert p["parent_exec_id"] == parent["exec_id"]
    assert p["cap"] == {"permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"]}
    assert p["process_credentials"] == {"uid": 1000, "gid": 1001, "euid": 1002, "egid": 1003,
                                        "suid": 1004, "sgid": 1005, "fsuid": 1006, "fsgid": 1007}
    assert list(p["ns"]) == list(NAMESPACE_KINDS)
    assert p["ns"]["uts"] == {"inum": HOST[0], "is_host": True}
    assert p["ns"]["net"] == {"inum": 4026532000}               # not host: is_host omitted
    assert parent["binary"] == "/usr/bin/bash"
    assert "arguments" not in parent                              # empty: omitted
    assert "parent_exec_id" not in parent
    assert parent["start_time"] == "2026-11-25T11:51:40Z"        # 500 s after boot, no fraction


def test_cap_creds_and_ns_only_when_configured_as_in_tetragon():
    # Tetragon writes "cap" and "process_credentials" with --enable-process-cred
    # and "ns" with --enable-process-ns, both off by default: the same here
    # (export.process_cred / process_ns), in the line, the dict and the compact line.
    caps = Caps(effective=1 << 21, permitted=1 << 21, inheritable=0)
    for cred, ns in ((False, False), (True, False), (False, True), (True, True)):
        cache = ProcessCache(NODE)
        r = TetragonJSON(NODE, HostNamespaces(HOST), boot_offset_ns=BOOT_OFFSET, process_cred=cred, process_ns=ns)
        cache.handle(exec_rec(100, 0, 500 * 10**9, binary=b"/usr/bin/bash", caps=caps))
        ev = cache.handle(exec_rec(200, 100, 1000 * 10**9, caps=caps))
        line = json.loads(r.render(ev))["process_exec"]
        as_dict = r.event_dict(ev)["process_exec"]
        for p in (line["process"], line["parent"], as_dict["process"], as_dict["parent"]):
            assert ("cap" in p, "process_credentials" in p, "ns" in p) == (cred, cred, ns)
            assert p["tid"] == p["pid"]
        assert line == json.loads(json.dumps(as_dict))     # the dict holds tuples where JSON has lists
        assert ("CAP_SYS_ADMIN" in r.compact_line(ev)) == cred
        expected = ["exec_id", "pid", "uid", "cwd", "binary", "arguments", "flags", "start_time", "auid",
                    "parent_exec_id"] + ["cap"] * cred + ["ns"] * ns + ["tid"] + ["process_credentials"] * cred
        assert list(line["process"]) == expected


def test_exit_line_shape_signal_and_status():
    cache, r, _ = setup()
    cache.handle(exec_rec(200, 100, 1000 * 10**9))
    killed = json.loads(r.render(cache.handle(ExitRecord(1001 * 10**9, 200, 200, 9, 0))))
    body = killed["process_exit"]
    assert body["signal"] == "SIGKILL"
    assert "status" not in body                                   # 0: omitted, as protobuf JSON
    assert body["time"] == killed["time"] == "2026-11-25T12:00:01Z"
    assert body["process"]["pid"] == 200 and body["parent"]["pid"] == 100

    cache.handle(exec_rec(201, 100, 1002 * 10**9))
    failed = json.loads(r.render(cache.handle(ExitRecord(1003 * 10**9, 201, 201, 2 << 8, 0))))
    assert failed["process_exit"]["status"] == 2
    assert "signal" not in failed["process_exit"]


def test_event_without_parent_has_no_parent_key():
    cache = ProcessCache(NODE)
    r = TetragonJSON(NODE, HostNamespaces(HOST), boot_offset_ns=BOOT_OFFSET)
    d = json.loads(r.render(cache.handle(exec_rec(5, 4, 10))))
    assert "parent" not in d["process_exec"]


def test_non_utf8_and_spaces_round_trip():
    cache, r, _ = setup()
    binary = b"/tmp/my dir/x\xff\xfe"
    args = [b"a b", b"\xff", b'say "hi"', b"", b"plain"]
    line = r.render(cache.handle(exec_rec(300, 100, 10**9, binary=binary, args=args,
                                          cwd=b"/tmp/\xe9t\xe9 dir")))
    assert line.isascii()                                         # ensure_ascii
    assert "\\ud" not in line                                     # no lone surrogates
    p = json.loads(line)["process_exec"]["process"]
    assert p["binary"] == "/tmp/my dir/x\\xff\\xfe"
    assert text_to_bytes(p["binary"]) == binary
    assert text_to_bytes(p["cwd"]) == b"/tmp/\xe9t\xe9 dir"
    assert text_to_bytes(p["arguments"]) == b'"a b" \xff "say \\"hi\\"" "" plain'


def test_format_arguments_rule():
    assert format_arguments([]) == ""
    assert format_arguments([b"-s", b"https://x"]) == "-s https://x"
    assert format_arguments([b"hello world"]) == '"hello world"'    # no leading space
    assert format_arguments([b"a\\b"]) == "a\\b"                     # unquoted: untouched
    assert format_arguments([b"a\\ b"]) == '"a\\\\ b"'


def test_flags_and_procfs_entries(fake_proc):
    fake_proc.add(1, ppid=0, exe=b"/sbin/init", start_ticks=100)
    cache = ProcessCache(NODE)
    cache.load_procfs(fake_proc.path)
    r = TetragonJSON(NODE, HostNamespaces(HOST), boot_offset_ns=BOOT_OFFSET)
    ev = cache.handle(exec_rec(2, 1, 10**9, cwd=b"/", truncated_args=True))
    d = json.loads(r.render(ev))["process_exec"]
    assert d["process"]["flags"] == "execve rootcwd truncArgs"
    assert d["parent"]["flags"] == "procFS rootcwd"
    assert d["parent"]["binary"] == "/sbin/init"


def test_container_id_in_docker_and_host_fields_only_when_asked():
    cache = ProcessCache(NODE, cgroup_path_for={7: "/system.slice/docker-" + "ab" * 32 + ".scope"}.get)
    ev = cache.handle(exec_rec(9, 1, 10, cgroup_id=7))
    strict = json.loads(TetragonJSON(NODE, HostNamespaces(HOST), boot_offset_ns=BOOT_OFFSET).render(ev))
    p = strict["process_exec"]["process"]
    assert p["docker"] == "ab" * 32                       # Tetragon's field for the container id
    assert "tetrahost" not in strict and not {"cgroup", "unit", "slice", "container", "workload_namespace"} & set(p)
    ev.process.rendered = None
    r = TetragonJSON(NODE, HostNamespaces(HOST), boot_offset_ns=BOOT_OFFSET, host_fields=True)
    line = r.render(ev)
    host = json.loads(line)["tetrahost"]["process"]
    assert host["cgroup"] == "/system.slice/docker-" + "ab" * 32 + ".scope"
    assert host["container"] == {"runtime": "docker", "id": "ab" * 32}
    assert host["workload_namespace"] == "docker"
    assert host["slice"] == "system.slice"
    assert r.event_dict(ev) == json.loads(line)


def test_event_dict_matches_rendered_line():
    cache, r, _ = setup()
    cache.handle(exec_rec(200, 100, 1000 * 10**9))
    ev = cache.handle(ExitRecord(1001 * 10**9, 200, 200, 9, 0))
    assert r.event_dict(ev) == json.loads(r.render(ev))


def test_capability_names_and_fraction():
    assert capability_names(0) == ()
    # Tetragon's CapabilitiesType spells bit 1 without the CAP_ prefix; bits it has no value for are left out
    assert capability_names((1 << 40) | (1 << 1) | 1) == ("CAP_CHOWN", "DAC_OVERRIDE", "CAP_CHECKPOINT_RESTORE")
    assert capability_names(1 << 45) == ()
    assert format_fraction(0) == ""
    assert format_fraction(5_000_000) == ".005"
    assert format_fraction(5_000) == ".000005"
    assert format_fraction(5) == ".000000005"


def test_boot_offset_is_plausible():
    offset = measure_boot_offset_ns()
    boot_wall = offset                                   # wall clock at ktime 0 = boot time
    uptime = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs((boot_wall + uptime) - time.time_ns()) < 50_000_000


def test_spliced_process_json_equals_plain_dump():
    # process_json builds its text from cached fragments; it must be exactly the dict's dump
    cache = ProcessCache(NODE, cgroup_path_for={7: "/machine.slice/libpod-" + "cd" * 32 + ".scope"}.get)
    r = TetragonJSON(NODE, HostNamespaces(HOST), boot_offset_ns=BOOT_OFFSET)
    entries = [
        cache.handle(exec_rec(1, 0, 10, args=(), cwd=b"", auid_unknown=True)).process,
        cache.handle(exec_rec(2, 1, 20, cgroup_id=7, caps=Caps(3, 7, 1),
                              args=[b"x y", b"\xff"], ns=(0,) * 10)).process,
        # every string the head writes itself, with what JSON must escape in it:
        # quotes, backslashes, control characters, DEL, non-ASCII UTF-8, invalid bytes
        cache.handle(exec_rec(3, 2, 30, cgroup_id=7, binary=b'/tmp/a"b\\c\x7f',
                              args=[b"tab\there", b'q"uote', b"back\\slash", "\u00e9\u4e2d".encode(), b""],
                              cwd="/home/\u00e9/\n\x01".encode() + b"\xfe")).process,
        cache.handle(exec_rec(4, 3, 40, binary="/opt/\u00fcber".encode(), args=[b"plain"],
                              cwd=b"/")).process,
    ]
    for entry in entries:
        expected = json.dumps(r.process_dict(entry), ensure_ascii=True, separators=(",", ":"))
        assert r.process_json(entry) == expected
